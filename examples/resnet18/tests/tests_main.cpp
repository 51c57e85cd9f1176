// The doctest main shared by the ResNet-18 example's test executables (built once, as an OBJECT library).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
