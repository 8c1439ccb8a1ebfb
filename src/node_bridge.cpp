#include "node_bridge.hpp"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <thread>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "messages.hpp"

namespace distflow {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 256u << 10;
constexpr std::size_t kOutputLimit = 1u << 20;  // buffered output before the dispatcher waits

std::error_code fail(std::error_code ec, std::string* why, std::string_view text) {
  if (why)
    why->assign(text);
  return ec;
}

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
}

// ---- signals: SIGTERM/SIGINT become a byte on a self-pipe -------------------------

int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  const auto byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const auto n = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

/// Installs the handlers (and ignores SIGPIPE) for its lifetime; restores them after.
class StopSignals {
 public:
  StopSignals() {
    if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw Error(fmt::format("cannot create signal pipe: {}", std::strerror(errno)));
    }
    struct sigaction action {};
    action.sa_handler = &on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGTERM, &action, &old_term_);
    ::sigaction(SIGINT, &action, &old_int_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~StopSignals() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    ::close(g_signal_pipe[0]);
    ::close(g_signal_pipe[1]);
    g_signal_pipe[0] = g_signal_pipe[1] = -1;
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  int fd() const { return g_signal_pipe[0]; }
  /// The signal received, or 0.
  int take() const {
    unsigned char byte = 0;
    return ::read(g_signal_pipe[0], &byte, 1) == 1 ? byte : 0;
  }

 private:
  struct sigaction old_term_ {};
  struct sigaction old_int_ {};
  struct sigaction old_pipe_ {};
};

// ---- output: NDJSON lines to an fd, written by their own thread ---------------------

/// Buffers received messages as NDJSON and writes them in batches from a thread
/// of its own, so a slow reader blocks the dispatcher (and so fills the mailbox,
/// where the overflow policy decides) without blocking anything else. The fd can
/// change (child restarts); the pump owns and closes the fds it is given.
class OutputPump {
 public:
  explicit OutputPump(int fd, bool owns_fd) : fd_(fd), owns_(owns_fd) {
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw Error(fmt::format("cannot create pipe: {}", std::strerror(errno)));
    }
    thread_ = std::thread([this] { write_loop(); });
  }
  ~OutputPump() {
    finish(std::chrono::milliseconds(0));
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  /// Called by the dispatcher thread per message; waits while the buffer is full.
  void push(const Envelope& message) {
    std::unique_lock lock(mutex_);
    space_.wait(lock, [&] { return closed_ || buf_.size() < kOutputLimit; });
    if (closed_)
      return;
    append_ndjson_line(buf_, message);
    lock.unlock();
    ready_.notify_one();
  }

  /// Replaces the fd (-1: none; lines wait). The old one is closed once unused.
  void set_fd(int fd) {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0 && owns_)
      retired_.push_back(fd_);
    fd_ = fd;
    owns_ = true;
    ready_.notify_one();
    wake();
  }

  /// Stops accepting lines and wakes a waiting push (it discards its line).
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    space_.notify_all();
  }

  /// close(), then lets the writer drain for up to `timeout`, and joins it.
  void finish(std::chrono::milliseconds timeout) {
    close();
    if (!thread_.joinable())
      return;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      deadline_ = Clock::now() + timeout;
    }
    ready_.notify_one();
    wake();
    thread_.join();
    std::lock_guard lock(mutex_);
    for (int fd : retired_)
      ::close(fd);
    retired_.clear();
    if (fd_ >= 0 && owns_)
      ::close(fd_);
    fd_ = -1;
  }

  std::uint64_t lost_lines() const { return lost_.load(std::memory_order_relaxed); }

 private:
  void wake() {
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(wake_[1], &byte, 1);
  }

  void write_loop() {
    std::string out;
    std::unique_lock lock(mutex_);
    for (;;) {
      for (int fd : retired_)
        ::close(fd);
      retired_.clear();
      ready_.wait(lock,
                  [&] { return stopping_ || (!buf_.empty() && fd_ >= 0) || !retired_.empty(); });
      if (!retired_.empty())
        continue;
      if (buf_.empty() || fd_ < 0 || (stopping_ && Clock::now() >= deadline_)) {
        if (stopping_)
          return;
        continue;
      }
      out.swap(buf_);
      const int fd = fd_;
      lock.unlock();
      space_.notify_all();
      const std::size_t written = write_some(fd, out);
      lock.lock();
      if (written < out.size()) {
        // The reader went away mid-batch: the line cut in two is lost, the rest
        // waits (in order) for the next fd, e.g. a restarted child.
        std::size_t from = written;
        if (written > 0 && out[written - 1] != '\n') {
          const auto nl = out.find('\n', written);
          from = nl == std::string::npos ? out.size() : nl + 1;
          lost_.fetch_add(1, std::memory_order_relaxed);
        }
        buf_.insert(0, out, from);
        if (fd_ == fd) {
          if (owns_)
            retired_.push_back(fd_);
          fd_ = -1;
        }
      }
      out.clear();
    }
  }

  /// Writes `out` to `fd` until done, an error, or the stop deadline; returns bytes written.
  std::size_t write_some(int fd, const std::string& out) {
    std::size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = ::write(fd, out.data() + off, out.size() - off);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN) {
        Clock::time_point deadline;
        bool stopping = false;
        {
          std::lock_guard lock(mutex_);
          stopping = stopping_;
          deadline = deadline_;
        }
        if (stopping && Clock::now() >= deadline)
          return off;
        pollfd fds[2] = {{fd, POLLOUT, 0}, {wake_[0], POLLIN, 0}};
        ::poll(fds, 2, stopping ? poll_ms(deadline) : -1);
        if (fds[1].revents & POLLIN) {
          char sink[64];
          while (::read(wake_[0], sink, sizeof sink) > 0) {
          }
          std::lock_guard lock(mutex_);
          if (fd_ != fd)
            return off;  // replaced while we waited: the old reader is gone
        }
        continue;
      }
      spdlog::debug("output write failed fd={} error={}", fd, std::strerror(errno));
      return off;
    }
    return off;
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable space_;
  std::string buf_;
  std::vector<int> retired_;
  int fd_;
  bool owns_;
  bool closed_ = false;
  bool stopping_ = false;
  Clock::time_point deadline_{};
  int wake_[2] = {-1, -1};
  std::atomic<std::uint64_t> lost_{0};
  std::thread thread_;
};

// ---- input: NDJSON lines to sends ----------------------------------------------------

struct Counters {
  std::atomic<std::uint64_t> lines{0};
  std::atomic<std::uint64_t> bad_lines{0};
  std::atomic<std::uint64_t> send_failures{0};
};

/// Reads one input stream (stdin, or one run of the child) and sends its lines.
class InputStream {
 public:
  /// `source` names the stream in reports; it must be a literal.
  InputStream(int fd, std::string_view source, std::size_t max_line, NodeRuntime& node,
              Counters& counters)
      : fd_(fd), source_(source), reader_(max_line), node_(node), counters_(counters) {}

  int fd() const { return fd_; }

  /// Reads what is available (one read); false at end of stream.
  bool read_once() {
    auto room = reader_.prepare(kReadChunk);
    ssize_t n = 0;
    do {
      n = ::read(fd_, room.data(), room.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
      return true;
    if (n <= 0) {
      if (n < 0)
        spdlog::warn("{}: read failed: {}", source_, std::strerror(errno));
      if (auto line = reader_.finish())
        handle(*line);
      return false;
    }
    reader_.commit(static_cast<std::size_t>(n));
    while (auto line = reader_.next())
      handle(*line);
    return true;
  }

  /// Reads everything already written, without waiting (after the writer exited).
  void drain() {
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    for (;;) {
      auto room = reader_.prepare(kReadChunk);
      const ssize_t n = ::read(fd_, room.data(), room.size());
      if (n <= 0)
        break;
      reader_.commit(static_cast<std::size_t>(n));
      while (auto line = reader_.next())
        handle(*line);
    }
    if (auto line = reader_.finish())
      handle(*line);
  }

 private:
  void handle(const NdjsonLine& line) {
    counters_.lines.fetch_add(1, std::memory_order_relaxed);
    if (line.too_long) {
      bad(line.number, fmt::format("longer than the limit of {} bytes", reader_.max_line_bytes()));
      return;
    }
    OutboundLine out;
    if (parser_.parse(line.text, out, &why_)) {
      bad(line.number, why_);
      return;
    }
    Counters* counters = &counters_;
    node_.send(out.to, out.payload,
               [counters, number = line.number, source = source_](std::error_code,
                                                                  const std::string& message) {
                 counters->send_failures.fetch_add(1, std::memory_order_relaxed);
                 spdlog::warn("{} line {}: {}", source, number, message);
               });
  }

  void bad(std::uint64_t number, std::string_view why) {
    counters_.bad_lines.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("{} line {}: {}", source_, number, why);
  }

  int fd_;
  std::string_view source_;  // a literal
  NdjsonReader reader_;
  OutboundParser parser_;
  std::string why_;
  NodeRuntime& node_;
  Counters& counters_;
};

/// The node's main loop: waits on the input, the child's exit and the stop signals.
class Bridge {
 public:
  explicit Bridge(const NodeBridgeOptions& options)
      : options_(options),
        limiter_(options.restart, options.restart_limit, options.restart_window) {}

  int run() {
    node_ = NodeRuntime::start(options_.node);
    spdlog::info("node started node_id={} alias={} port={} pmd={}", node_->node_id(),
                 node_->alias().empty() ? "-" : node_->alias(), node_->port(),
                 options_.node.pmd.to_string());
    const bool exec = !options_.exec.empty();
    pump_.emplace(exec ? -1 : options_.output_fd, false);
    node_->on_message([this](const Envelope& message) { pump_->push(message); });
    int code = 0;
    try {
      if (exec) {
        start_child();
      } else {
        input_.emplace(options_.input_fd, "stdin", options_.max_line_bytes, *node_, counters_);
      }
      code = loop();
    } catch (...) {
      stop();
      throw;
    }
    stop();
    return code;
  }

 private:
  void start_child() {
    ChildSpec spec;
    spec.argv = options_.exec;
    spec.env = {{"DISTFLOW_NODE_ID", node_->node_id()},
                {"DISTFLOW_ALIAS", node_->alias()},
                {"DISTFLOW_PMD_PORT", std::to_string(options_.node.pmd.port)}};
    child_ = std::make_unique<Child>(spec);
    spdlog::info("child started pid={} command='{}'", child_->pid(), options_.exec[0]);
    pump_->set_fd(child_->take_stdin());
    input_.emplace(child_->take_stdout(), "child output", options_.max_line_bytes, *node_,
                   counters_);
  }

  void close_input() {
    if (input_)
      ::close(input_->fd());
    input_.reset();
  }

  int loop() {
    std::optional<Clock::time_point> stop_deadline;
    for (;;) {
      pollfd fds[3] = {{signals_.fd(), POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
      if (input_)
        fds[1].fd = input_->fd();
      if (child_)
        fds[2].fd = child_->exit_fd();
      const int timeout = stop_deadline ? poll_ms(*stop_deadline) : -1;
      const int ready = ::poll(fds, 3, timeout);
      if (ready < 0 && errno != EINTR)
        throw Error(fmt::format("poll: {}", std::strerror(errno)));

      if (fds[0].revents & POLLIN) {
        while (const int sig = signals_.take()) {
          if (!child_) {
            spdlog::info("node stopping signal={}", sig);
            return 0;
          }
          spdlog::info("node stopping: forwarding signal={} to child pid={}", sig, child_->pid());
          child_->signal(sig);
          if (!stop_deadline)
            stop_deadline = Clock::now() + options_.stop_timeout;
        }
      }
      if (stop_deadline && Clock::now() >= *stop_deadline && child_ && !child_->try_wait()) {
        spdlog::warn("child pid={} still running {} ms after the signal: killing it", child_->pid(),
                     options_.stop_timeout.count());
        child_->signal(SIGKILL);
        stop_deadline = Clock::now() + options_.stop_timeout;
      }
      if (input_ && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && !input_->read_once()) {
        close_input();
        if (!child_)
          return 0;  // stdin EOF: drain outbound and exit
      }
      if (child_ && (fds[2].revents & POLLIN)) {
        const std::optional<int> code = child_->try_wait();
        if (!code)
          continue;
        if (input_)
          input_->drain();
        close_input();
        pump_->set_fd(-1);
        child_.reset();
        if (stop_deadline) {
          spdlog::info("child exited code={} after the stop signal", *code);
          return 0;
        }
        if (limiter_.allow(*code, Clock::now())) {
          spdlog::warn("child exited code={}: restarting it (restart={})", *code,
                       to_string(options_.restart));
          start_child();
          continue;
        }
        if (limiter_.limit_reached()) {
          spdlog::error("child exited code={}: restart limit reached ({} within {} ms)", *code,
                        options_.restart_limit, options_.restart_window.count());
        } else {
          spdlog::info("child exited code={}", *code);
        }
        return *code;
      }
    }
  }

  void stop() {
    try {
      node_->flush(std::chrono::seconds(5));
    } catch (const std::exception& e) {
      spdlog::warn("node stopping: flush failed: {}", e.what());
    }
    // Nothing must wait on the output while the runtime stops its dispatcher.
    pump_->close();
    const NodeStats stats = node_->stats();
    node_->shutdown();
    pump_->finish(std::chrono::seconds(2));
    spdlog::info(
        "node stopped received={} dropped={} sent={} send_failures={} lines={} bad_lines={}",
        stats.received, stats.mailbox.dropped, stats.sent, counters_.send_failures.load(),
        counters_.lines.load(), counters_.bad_lines.load());
  }

  const NodeBridgeOptions& options_;
  StopSignals signals_;
  RestartLimiter limiter_;
  Counters counters_;
  std::unique_ptr<NodeRuntime> node_;
  std::optional<OutputPump> pump_;
  std::unique_ptr<Child> child_;
  std::optional<InputStream> input_;
};

}  // namespace

// ---- OutboundParser ------------------------------------------------------------------

struct OutboundParser::Impl {
  JsonObjectWalker walker;
  std::string to;  // an escaped `to`, unescaped
};

OutboundParser::OutboundParser() : impl_(std::make_unique<Impl>()) {}
OutboundParser::~OutboundParser() = default;

std::error_code OutboundParser::parse(std::string_view line, OutboundLine& out, std::string* why) {
  static_assert(kLinePadding >= 16);
  out = {};
  // One pass validates the whole line (grammar, UTF-8, trailing bytes: the
  // payload is sent as is) and lists its members.
  if (auto ec = impl_->walker.walk(line, true, why)) {
    if (why && ec == errc::bad_json)
      why->insert(0, "invalid JSON: ");
    if (why && ec == errc::not_an_object)
      *why = R"(expected an object {"to":...,"payload":...})";
    return ec;
  }
  std::string_view to_token;
  bool have_payload = false;
  for (const JsonMember& member : impl_->walker.members()) {
    if (member.key == "to") {
      if (member.value.front() != '"')
        return fail(errc::wrong_type, why, "'to' is not a string");
      to_token = member.value;
    } else if (member.key == "payload") {
      out.payload = member.value;
      have_payload = true;
    }
  }
  if (to_token.empty())
    return fail(errc::missing_field, why, "missing 'to'");
  out.to = json_string_text(to_token, impl_->to);
  if (out.to.empty())
    return fail(errc::wrong_type, why, "'to' is empty");
  if (!have_payload)
    return fail(errc::missing_field, why, "missing 'payload'");
  return {};
}

int run_node_bridge(const NodeBridgeOptions& options) {
  Bridge bridge(options);
  return bridge.run();
}

}  // namespace distflow
