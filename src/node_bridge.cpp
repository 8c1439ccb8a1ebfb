#include "node_bridge.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "log_throttle.hpp"
#include "messages.hpp"
#include "shared_fd.hpp"
#include "subprocess.hpp"

namespace distflow {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 256u << 10;

std::error_code fail(std::error_code ec, std::string* why, std::string_view text) {
  if (why)
    why->assign(text);
  return ec;
}

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
}

// ---- signals: SIGTERM/SIGINT/SIGHUP become a byte on a self-pipe ------------------

int g_signal_pipe[2] = {-1, -1};
int g_alarm_pipe[2] = {-1, -1};  // the same signals, for the thread that unblocks sends

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  const auto byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const auto n = ::write(g_signal_pipe[1], &byte, 1);
  [[maybe_unused]] const auto m = ::write(g_alarm_pipe[1], &byte, 1);
  errno = saved;
}

/// Installs the handlers (and ignores SIGPIPE) for its lifetime; restores them after.
class StopSignals {
 public:
  StopSignals() {
    if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0 ||
        ::pipe2(g_alarm_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw Error(fmt::format("cannot create signal pipe: {}", std::strerror(errno)));
    }
    // The alarm's reader blocks (its own thread); the handler's writes never do.
    ::fcntl(g_alarm_pipe[0], F_SETFL, ::fcntl(g_alarm_pipe[0], F_GETFL) & ~O_NONBLOCK);
    struct sigaction action {};
    action.sa_handler = &on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    ::sigaction(SIGTERM, &action, &old_term_);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGHUP, &action, &old_hup_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~StopSignals() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGHUP, &old_hup_, nullptr);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    for (int* fd : {&g_signal_pipe[0], &g_signal_pipe[1], &g_alarm_pipe[0], &g_alarm_pipe[1]}) {
      ::close(*fd);
      *fd = -1;
    }
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  int fd() const { return g_signal_pipe[0]; }
  /// Blocks until a signal arrives (its number) or wake_alarm() (0).
  int wait_alarm() const {
    unsigned char byte = 0;
    ssize_t n = 0;
    do {
      n = ::read(g_alarm_pipe[0], &byte, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? byte : 0;
  }
  void wake_alarm() const {
    const unsigned char zero = 0;
    [[maybe_unused]] const auto n = ::write(g_alarm_pipe[1], &zero, 1);
  }
  /// The signal received, or 0.
  int take() const {
    unsigned char byte = 0;
    return ::read(g_signal_pipe[0], &byte, 1) == 1 ? byte : 0;
  }

 private:
  struct sigaction old_term_ {};
  struct sigaction old_int_ {};
  struct sigaction old_hup_ {};
  struct sigaction old_pipe_ {};
};

// ---- requests the script may answer -------------------------------------------------

/// The requests (messages with a `ref`, PROTOCOL.md §3.5) written to the script
/// and not answered yet: a line {"replyTo": REF, "payload": ...} goes back to the
/// sender of REF. Refs are unique per caller, not per node: with the same ref from
/// two callers, a reply without "to" answers the oldest. Bounded: past kMax, the
/// oldest is forgotten (counted, logged once a second).
class PendingRequests {
 public:
  static constexpr std::size_t kMax = 100000;

  /// The output thread, before the line is written.
  void add(const Envelope& request) {
    std::lock_guard lock(mutex_);
    const std::uint64_t seq = next_++;
    auto entry = by_seq_.emplace(seq, Waiting{request.ref(), request.reply_address()}).first;
    by_ref_.emplace(entry->second.ref, seq);
    if (by_seq_.size() <= kMax)
      return;
    forget(by_seq_.begin());
    ++forgotten_;
    if (std::uint64_t more = 0; log_.allow(Clock::now(), more)) {
      spdlog::warn("{} requests never answered: the oldest forgotten ({} waiting at most)",
                   forgotten_, kMax);
    }
  }

  /// The reply address for `ref` (and `to`, when the line names it), no longer waiting.
  std::optional<std::string> take(const std::string& ref, std::string_view to) {
    std::lock_guard lock(mutex_);
    auto [first, last] = by_ref_.equal_range(ref);
    auto oldest = by_seq_.end();
    for (auto it = first; it != last; ++it) {
      auto waiting = by_seq_.find(it->second);
      if ((to.empty() || waiting->second.address == to) &&
          (oldest == by_seq_.end() || waiting->first < oldest->first))
        oldest = waiting;
    }
    if (oldest == by_seq_.end())
      return std::nullopt;
    std::string address = std::move(oldest->second.address);
    forget(oldest);
    return address;
  }

 private:
  struct Waiting {
    std::string ref;
    std::string address;  // the request's sender, as a reply reaches it
  };
  using BySeq = std::map<std::uint64_t, Waiting>;

  void forget(BySeq::iterator waiting) {  // under mutex_
    auto [first, last] = by_ref_.equal_range(waiting->second.ref);
    for (auto it = first; it != last; ++it) {
      if (it->second == waiting->first) {
        by_ref_.erase(it);
        break;
      }
    }
    by_seq_.erase(waiting);
  }

  std::mutex mutex_;
  std::uint64_t next_ = 0;
  BySeq by_seq_;  // oldest first
  std::unordered_multimap<std::string, std::uint64_t> by_ref_;
  std::uint64_t forgotten_ = 0;
  LogThrottle log_{std::chrono::seconds(1)};
};

// ---- output: the one hand-off, mailbox -> this thread -> the fd ---------------------

/// Takes received messages from the node's mailbox in batches and writes them as
/// NDJSON lines from a thread of its own: one hand-off (no handler thread, no second
/// buffer). A slow reader holds this thread, so the mailbox fills and the overflow
/// policy decides (`block`, the CLI's default: the node stops reading its peers and
/// TCP slows the senders). The fd can change (a restarted child); with none, the
/// messages wait in the mailbox. A write that fails (EPIPE: the reader is gone)
/// retires the fd, counts the lines it could not write as dropped, and makes
/// failure_fd() readable for the main loop. The writer owns the fds it is given.
class OutputWriter {
 public:
  /// `lost_reason` names the drops of a failed write ("output closed").
  OutputWriter(NodeRuntime& node, int fd, std::string lost_reason, PendingRequests& requests)
      : node_(node), requests_(requests), fd_(fd), lost_reason_(std::move(lost_reason)) {
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0 ||
        ::pipe2(failed_, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw Error(fmt::format("cannot create pipe: {}", std::strerror(errno)));
    }
    thread_ = std::thread([this] { write_loop(); });
  }
  ~OutputWriter() {
    finish(std::chrono::milliseconds(0), "node stopped before they were written");
    for (int fd : {wake_[0], wake_[1], failed_[0], failed_[1]})
      ::close(fd);
  }
  OutputWriter(const OutputWriter&) = delete;
  OutputWriter& operator=(const OutputWriter&) = delete;

  /// Replaces the fd (-1: none; messages wait in the mailbox). The old one is closed.
  void set_fd(int fd) {
    std::lock_guard lock(mutex_);
    retire_locked();
    fd_ = fd;
    ready_.notify_one();
    wake();
  }

  /// Readable after a failed write; take_failure() says why.
  int failure_fd() const { return failed_[0]; }
  std::optional<std::string> take_failure() {
    char sink[16];
    while (::read(failed_[0], sink, sizeof sink) > 0) {
    }
    std::lock_guard lock(mutex_);
    return std::exchange(failure_, std::nullopt);
  }

  /// Writes what the mailbox still holds (call after the node's shutdown, which
  /// closes it) for up to `timeout`, then stops; what is left is counted as dropped
  /// with `reason`. Idempotent.
  void finish(std::chrono::milliseconds timeout, std::string_view reason) {
    if (!thread_.joinable())
      return;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      deadline_ = Clock::now() + timeout;
      final_reason_ = reason;
      ready_.notify_one();
    }
    wake();
    thread_.join();
    std::lock_guard lock(mutex_);
    retire_locked();
  }

 private:
  static constexpr std::size_t kBatch = 1024;

  void wake() {
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(wake_[1], &byte, 1);
  }

  void retire_locked() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

  void write_loop() {
    std::vector<Envelope> batch;
    batch.reserve(kBatch);
    std::string out;
    std::unique_lock lock(mutex_);
    for (;;) {
      ready_.wait(lock, [&] { return stopping_ || fd_ >= 0; });
      const int fd = fd_;
      const bool stopping = stopping_;
      lock.unlock();
      batch.clear();
      // While stopping, the mailbox is closed: 0 means drained.
      const std::size_t n = node_.receive_batch(
          batch, kBatch, stopping ? std::chrono::milliseconds(0) : std::chrono::milliseconds(50));
      if (n == 0) {
        lock.lock();
        if (stopping)
          break;
        continue;
      }
      if (fd < 0) {  // stopping with nowhere to write: the rest is lost
        node_.count_dropped(n, final_reason_);
        lock.lock();
        continue;
      }
      out.clear();
      for (const Envelope& message : batch) {
        if (message.is_request())
          requests_.add(message);
        append_ndjson_line(out, message);
      }
      int error = 0;
      const std::size_t written = write_all(fd, out, error);
      lock.lock();
      if (written == out.size())
        continue;
      const auto lines = static_cast<std::size_t>(
          std::count(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(written), '\n'));
      if (error != 0) {
        if (fd_ == fd)
          retire_locked();
        failure_ = fmt::format("{} ({}): {} of {} lines of the last batch not written",
                               lost_reason_, std::strerror(error), n - lines, n);
        const char byte = 1;
        [[maybe_unused]] const auto w = ::write(failed_[1], &byte, 1);
        lock.unlock();
        node_.count_dropped(n - lines, fmt::format("{} ({})", lost_reason_, std::strerror(error)));
      } else {
        const std::string reason = stopping_ ? final_reason_ : lost_reason_;
        lock.unlock();
        node_.count_dropped(n - lines, reason);
      }
      lock.lock();
    }
  }

  /// Writes `out` to `fd` until done, an error (`error` = errno), the fd being
  /// replaced, or the stop deadline. Returns the bytes written.
  std::size_t write_all(int fd, const std::string& out, int& error) {
    std::size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = ::write(fd, out.data() + off, out.size() - off);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno != EAGAIN) {
        error = errno;
        return off;
      }
      Clock::time_point deadline;
      bool stopping = false;
      {
        std::lock_guard lock(mutex_);
        if (fd_ != fd)
          return off;  // replaced while we waited: that reader is gone
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
      }
    }
    return off;
  }

  NodeRuntime& node_;
  PendingRequests& requests_;
  std::mutex mutex_;
  std::condition_variable ready_;
  int fd_;
  bool stopping_ = false;
  Clock::time_point deadline_{};
  std::string lost_reason_;
  std::string final_reason_ = "node stopped before they were written";
  std::optional<std::string> failure_;
  int wake_[2] = {-1, -1};
  int failed_[2] = {-1, -1};
  std::thread thread_;
};

// ---- input: NDJSON lines to sends ----------------------------------------------------

struct Counters {
  LogThrottle failure_log{std::chrono::seconds(1)};  // the I/O thread's
  std::atomic<std::uint64_t> lines{0};
  std::atomic<std::uint64_t> bad_lines{0};
  std::atomic<std::uint64_t> send_failures{0};
};

/// Reads one input stream (stdin, or one run of the child) and sends its lines.
class InputStream {
 public:
  /// `source` names the stream in reports; it must be a literal.
  InputStream(int fd, std::string_view source, std::size_t max_line, NodeRuntime& node,
              Counters& counters, PendingRequests& requests)
      : fd_(fd),
        source_(source),
        reader_(max_line),
        node_(node),
        counters_(counters),
        requests_(requests) {}

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
    auto on_error = [counters, number = line.number, source = source_](std::error_code,
                                                                       const std::string& message) {
      counters->send_failures.fetch_add(1, std::memory_order_relaxed);
      // On the I/O thread. A destination that is gone fails every line
      // sent to it: one report a second, with the count.
      std::uint64_t more = 0;
      if (counters->failure_log.allow(std::chrono::steady_clock::now(), more)) {
        if (more > 0) {
          spdlog::warn("{} line {}: {} ({} more lines failed since the last report)", source,
                       number, message, more);
        } else {
          spdlog::warn("{} line {}: {}", source, number, message);
        }
      }
    };
    if (out.reply_to.data() == nullptr) {
      node_.send(out.to, out.payload, std::move(on_error));
      return;
    }
    // An answer to a request this node wrote out: to its sender, with inReplyTo.
    const std::string ref(out.reply_to);
    auto address = requests_.take(ref, out.to);
    if (!address && out.to.empty()) {
      bad(line.number, fmt::format("no request with ref '{}' waits for a reply (answered "
                                   "already, or never received)",
                                   ref));
      return;
    }
    node_.reply_to(address ? *address : out.to, ref, out.payload, std::move(on_error));
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
  PendingRequests& requests_;
};

/// The node's main loop: waits on the input, the child's exit, a failed output and
/// the stop signals.
class Bridge {
 public:
  explicit Bridge(const NodeBridgeOptions& options)
      : options_(options),
        limiter_(options.restart, options.restart_limit, options.restart_window) {}
  ~Bridge() {
    if (alarm_.joinable()) {
      signals_.wake_alarm();
      alarm_.join();
    }
  }
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  int run() {
    NodeOptions node_options = options_.node;
    node_options.validate_payloads = false;  // InputStream validates every line once
    node_ = NodeRuntime::start(node_options);
    // A stop signal must not wait behind a send blocked on a stuck destination
    // (the main thread may be inside one): this thread makes such sends give up.
    alarm_ = std::thread([this] {
      while (const int sig = signals_.wait_alarm())
        node_->interrupt_sends("stopping on signal " + std::to_string(sig));
    });
    spdlog::info("node started node_id={} alias={} port={} pmd={}", node_->node_id(),
                 node_->alias().empty() ? "-" : node_->alias(), node_->port(),
                 options_.node.pmd.to_string());
    const bool exec = !options_.exec.empty();
    output_.emplace(*node_, exec ? -1 : private_nonblocking_fd(options_.output_fd, true),
                    exec ? "child's stdin closed" : "output closed", requests_);
    int code = 0;
    try {
      if (exec) {
        start_child();
      } else if (!is_dev_null(options_.input_fd)) {
        input_.emplace(options_.input_fd, "stdin", options_.max_line_bytes, *node_, counters_,
                       requests_);
      } else {
        // A background job of a script (stdin is /dev/null): a pure receiver that
        // runs until signalled, instead of stopping at an EOF that was never input.
        spdlog::debug("stdin is /dev/null: receiving until signalled");
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
    // From the thread that runs the bridge (the node's main thread): the child's
    // parent-death signal fires when this thread ends.
    child_ = std::make_unique<Subprocess>(exec_child_options(
        options_.exec, {{"DISTFLOW_NODE_ID", node_->node_id()},
                        {"DISTFLOW_ALIAS", node_->alias()},
                        {"DISTFLOW_PMD_PORT", std::to_string(options_.node.pmd.port)}}));
    child_failed_ = false;
    spdlog::info("child started pid={} command='{}'", child_->pid(), options_.exec[0]);
    output_->set_fd(child_->take_stdin());
    input_.emplace(child_->take_stdout(), "child output", options_.max_line_bytes, *node_,
                   counters_, requests_);
  }

  void close_input() {
    if (input_)
      ::close(input_->fd());
    input_.reset();
  }

  int loop() {
    std::optional<Clock::time_point> stop_deadline;
    for (;;) {
      pollfd fds[4] = {{signals_.fd(), POLLIN, 0},
                       {-1, POLLIN, 0},
                       {-1, POLLIN, 0},
                       {output_->failure_fd(), POLLIN, 0}};
      if (input_)
        fds[1].fd = input_->fd();
      if (child_)
        fds[2].fd = child_->exit_fd();
      const int timeout = stop_deadline ? poll_ms(*stop_deadline) : -1;
      const int ready = ::poll(fds, 4, timeout);
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
      if (fds[3].revents & POLLIN) {
        if (auto failure = output_->take_failure()) {
          if (!child_) {
            spdlog::warn("{}; unregistering and stopping", *failure);
            output_failed_ = true;
            return 1;
          }
          // The child stopped reading its input but may run on: it has failed.
          spdlog::warn("{}; the child pid={} has failed: stopping it", *failure, child_->pid());
          child_failed_ = true;
          child_->signal(SIGTERM);
          if (!kill_deadline_)
            kill_deadline_ = Clock::now() + options_.stop_timeout;
        }
      }
      for (auto* deadline : {&stop_deadline, &kill_deadline_}) {
        if (*deadline && Clock::now() >= **deadline && child_ && !child_->try_wait()) {
          spdlog::warn("child pid={} still running {} ms after the signal: killing it",
                       child_->pid(), options_.stop_timeout.count());
          child_->signal(SIGKILL);
          *deadline = Clock::now() + options_.stop_timeout;
        }
      }
      if (input_ && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && !input_->read_once()) {
        close_input();
        if (!child_)
          return 0;  // stdin EOF: drain outbound and exit
      }
      if (child_ && (fds[2].revents & POLLIN)) {
        std::optional<int> code = child_->try_wait();
        if (!code)
          continue;
        if (input_)
          input_->drain();
        close_input();
        output_->set_fd(-1);
        child_.reset();
        kill_deadline_.reset();
        if (stop_deadline) {
          spdlog::info("child exited code={} after the stop signal", *code);
          return 0;
        }
        if (child_failed_ && *code == 0)
          code = 1;  // it closed its input while messages were coming: a failure
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
    if (alarm_.joinable()) {
      signals_.wake_alarm();
      alarm_.join();
    }
    try {
      node_->flush(std::chrono::seconds(5));
    } catch (const std::exception& e) {
      spdlog::warn("node stopping: flush failed: {}", e.what());
    }
    // Unregisters and closes the mailbox; the writer then writes what it still holds.
    node_->shutdown();
    output_->finish(std::chrono::seconds(2), output_failed_ ? "output closed"
                                             : child_ || options_.exec.empty()
                                                 ? "node stopped before they were written"
                                                 : "no child to deliver them to");
    const NodeStats stats = node_->stats();
    std::string drops;
    for (const auto& [reason, n] : stats.drops)
      drops += fmt::format("{}{}: {}", drops.empty() ? " (" : ", ", reason, n);
    if (!drops.empty())
      drops += ")";
    spdlog::info(
        "node stopped received={} dropped={}{} sent={} send_failures={} lines={} bad_lines={}",
        stats.received, stats.dropped, drops, stats.sent, counters_.send_failures.load(),
        counters_.lines.load(), counters_.bad_lines.load());
  }

  const NodeBridgeOptions& options_;
  StopSignals signals_;
  RestartLimiter limiter_;
  Counters counters_;
  PendingRequests requests_;
  std::unique_ptr<NodeRuntime> node_;
  std::thread alarm_;  // unblocks sends on a stop signal
  std::optional<OutputWriter> output_;
  std::unique_ptr<Subprocess> child_;
  bool child_failed_ = false;
  bool output_failed_ = false;
  std::optional<Clock::time_point> kill_deadline_;  // SIGKILL a failed child that lingers
  std::optional<InputStream> input_;
};

}  // namespace

// ---- OutboundParser ------------------------------------------------------------------

struct OutboundParser::Impl {
  JsonObjectWalker walker;
  std::string to;        // an escaped `to`, unescaped
  std::string reply_to;  // an escaped `replyTo`, unescaped
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
  std::string_view reply_token;
  bool have_payload = false;
  for (const JsonMember& member : impl_->walker.members()) {
    if (member.key == "to") {
      if (member.value.front() != '"')
        return fail(errc::wrong_type, why, "'to' is not a string");
      to_token = member.value;
    } else if (member.key == "replyTo") {
      if (member.value.front() != '"')
        return fail(errc::wrong_type, why, "'replyTo' is not a string (the request's \"ref\")");
      reply_token = member.value;
    } else if (member.key == "payload") {
      out.payload = member.value;
      have_payload = true;
    }
  }
  if (!reply_token.empty()) {
    // An answer: `to` is optional (the request's sender).
    out.reply_to = json_string_text(reply_token, impl_->reply_to);
    if (out.reply_to.data() == nullptr)
      out.reply_to = std::string_view("", 0);
    if (!to_token.empty())
      out.to = json_string_text(to_token, impl_->to);
  } else {
    if (to_token.empty())
      return fail(errc::missing_field, why, "missing 'to' (or 'replyTo', to answer a request)");
    out.to = json_string_text(to_token, impl_->to);
    if (out.to.empty())
      return fail(errc::wrong_type, why, "'to' is empty");
  }
  if (!have_payload)
    return fail(errc::missing_field, why, "missing 'payload'");
  return {};
}

int run_node_bridge(const NodeBridgeOptions& options) {
  Bridge bridge(options);
  return bridge.run();
}

}  // namespace distflow
