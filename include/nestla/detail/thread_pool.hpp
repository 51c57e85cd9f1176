// A persistent pool of worker threads that runs one job split into n parts, with no allocation per job.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace nestla::detail {

class thread_pool {
 public:
  // n is the total number of threads working on a job, the caller included.
  explicit thread_pool(unsigned n) : n_(n < 1 ? 1 : n) {
    workers_.reserve(n_ - 1);
    for (unsigned i = 1; i < n_; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  unsigned size() const { return n_; }

  // Calls f(part, parts) for part in [0, parts) on the pool's threads and waits.
  // The first exception thrown by any part is rethrown here.
  template <class F>
  void run(F& f) {
    if (n_ == 1) {
      f(0u, 1u);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      job_ = &f;
      invoke_ = [](void* job, unsigned part, unsigned parts) { (*static_cast<F*>(job))(part, parts); };
      pending_ = n_ - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr mine;
    try {
      f(0u, n_);
    } catch (...) {
      mine = std::current_exception();
    }
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work(unsigned part) {
    std::size_t seen = 0;
    for (;;) {
      void* job;
      void (*invoke)(void*, unsigned, unsigned);
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        invoke = invoke_;
      }
      std::exception_ptr err;
      try {
        invoke(job, part, n_);
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard lock(mutex_);
        if (err && !error_) error_ = err;
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  unsigned n_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  void* job_ = nullptr;
  void (*invoke_)(void*, unsigned, unsigned) = nullptr;
  unsigned pending_ = 0;
  std::size_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// The thread count an optimizer was asked for, and its pool, made on first
// use. Copies get their own pool: two optimizers never share worker threads.
class pool_handle {
 public:
  pool_handle() = default;
  pool_handle(const pool_handle& o) : threads_(o.threads_) {}
  pool_handle& operator=(const pool_handle& o) {
    if (this != &o) {
      threads_ = o.threads_;
      pool_.reset();
    }
    return *this;
  }
  pool_handle(pool_handle&&) noexcept = default;
  pool_handle& operator=(pool_handle&&) noexcept = default;

  unsigned threads() const { return threads_; }
  void set_threads(unsigned n) {
    if (n < 1) n = 1;
    if (n != threads_) {
      threads_ = n;
      pool_.reset();
    }
  }
  template <class F>
  void run(F& f) {
    if (threads_ <= 1) {
      f(0u, 1u);
      return;
    }
    if (!pool_) pool_ = std::make_unique<thread_pool>(threads_);
    pool_->run(f);
  }

 private:
  unsigned threads_ = 1;
  std::unique_ptr<thread_pool> pool_;
};

}  // namespace nestla::detail
