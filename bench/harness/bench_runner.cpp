#include "bench_runner.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <ostream>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_child.hpp"
#include "bench_worker.hpp"
#include "errors.hpp"
#include "framing.hpp"
#include "subprocess.hpp"

namespace distflow {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kStartTimeout{10000};

std::string count_param(std::uint64_t n) {
  return format_count(static_cast<double>(n));
}

void emit(const BenchReport& report, const BenchCommon& common, std::ostream& out) {
  if (common.json) {
    write_json(out, report);
  } else {
    write_text(out, report);
  }
  if (!common.csv_path.empty()) {
    std::ofstream csv(common.csv_path);
    if (!csv)
      throw Error("cannot write csv file '" + common.csv_path + "'");
    write_csv(csv, report);
  }
}

void begin(const BenchReport& report, const BenchCommon& common, std::ostream& out) {
  if (common.reps == 0)
    throw Error("--reps must be at least 1");
  if (!common.json) {
    write_banner(out, report);
    out.flush();
  }
}

// ---- mailbox ----------------------------------------------------------------------------

/// The textbook queue the mailbox is compared with: one lock per push and per pop.
template <class T>
class BaselineQueue {
 public:
  BaselineQueue(std::size_t max_size, OverflowPolicy policy) : max_(max_size), policy_(policy) {}

  PushResult push(T&& item) {
    std::unique_lock lock(mutex_);
    PushResult result = PushResult::accepted;
    if (items_.size() >= max_) {
      switch (policy_) {
        case OverflowPolicy::drop_newest:
          return PushResult::dropped;
        case OverflowPolicy::drop_oldest:
          items_.pop_front();
          result = PushResult::accepted_evicted;
          break;
        case OverflowPolicy::block:
          not_full_.wait(lock, [&] { return closed_ || items_.size() < max_; });
          if (closed_)
            return PushResult::closed;
          break;
      }
    }
    items_.push_back(std::move(item));
    lock.unlock();
    not_empty_.notify_one();
    return result;
  }

  /// Under one lock: as many as there is room for (block), else every item by the policy.
  std::size_t try_push_batch(std::span<T> items) {
    std::size_t taken = 0;
    {
      std::lock_guard lock(mutex_);
      if (closed_)
        return 0;
      for (T& item : items) {
        if (items_.size() >= max_) {
          if (policy_ == OverflowPolicy::block)
            break;
          if (policy_ == OverflowPolicy::drop_newest) {
            ++taken;
            continue;
          }
          items_.pop_front();
        }
        items_.push_back(std::move(item));
        ++taken;
      }
    }
    not_empty_.notify_one();
    return taken;
  }

  /// The same contract as the mailbox's: up to `max` items under one lock.
  std::size_t receive_batch(std::vector<T>& out, std::size_t max,
                            std::chrono::nanoseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!not_empty_.wait_for(lock, timeout, [&] { return !items_.empty() || closed_; }))
      return 0;
    const std::size_t n = std::min(max, items_.size());
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    lock.unlock();
    if (n > 0)
      not_full_.notify_all();
    return n;
  }

  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable not_empty_, not_full_;
  std::deque<T> items_;
  std::size_t max_;
  OverflowPolicy policy_;
  bool closed_ = false;
};

template <class T>
T make_item(const std::string& text, std::uint64_t i) {
  if constexpr (std::is_same_v<T, std::string>) {
    (void)i;
    return text;  // one allocation, as the I/O thread makes one body per message
  } else {
    (void)text;
    return i;
  }
}

template <class T>
std::uint64_t touch(const T& item) {
  if constexpr (std::is_same_v<T, std::string>) {
    return static_cast<std::uint64_t>(static_cast<unsigned char>(item[0]));
  } else {
    return item;
  }
}

template <class T, class Queue>
RateSample run_queue_once(Queue& queue, const MailboxBenchConfig& config, ProgressBar& progress) {
  const std::string text(std::max<std::size_t>(config.size, 1), 'x');
  const std::uint64_t msgs = config.msgs;
  std::atomic<bool> go{false};
  std::atomic<unsigned> finished{0};
  std::atomic<bool> stopping{false};
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < config.producers; ++p) {
    producers.emplace_back([&, p] {
      while (!go.load(std::memory_order_acquire))
        std::this_thread::yield();
      if (config.batch <= 1) {
        for (std::uint64_t i = p; i < msgs; i += config.producers) {
          if (queue.push(make_item<T>(text, i)) == PushResult::closed)
            break;
        }
      } else {
        // As the I/O thread does with what one read decoded: one try_push_batch per run.
        std::vector<T> run;
        run.reserve(config.batch);
        for (std::uint64_t i = p; i < msgs && !stopping.load(std::memory_order_relaxed);) {
          run.clear();
          for (; i < msgs && run.size() < config.batch; i += config.producers) {
            run.push_back(make_item<T>(text, i));
          }
          std::span<T> rest(run);
          while (!rest.empty() && !stopping.load(std::memory_order_relaxed)) {
            rest = rest.subspan(queue.try_push_batch(rest));
            if (!rest.empty())
              std::this_thread::yield();  // block policy: full, retry
          }
        }
      }
      finished.fetch_add(1, std::memory_order_release);
    });
  }
  std::vector<T> batch;
  batch.reserve(256);
  std::uint64_t received = 0, checksum = 0;
  const auto deadline = Clock::now() + config.common.timeout;
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  bool timed_out = false;
  for (std::uint64_t round = 1; received < msgs; ++round) {
    batch.clear();
    received += queue.receive_batch(batch, 256, milliseconds(1));
    for (const T& item : batch)
      checksum += touch(item);
    if (batch.empty() || round % 1024 == 0) {
      // Off the per-batch path: a clock read costs as much as a few items.
      progress.update(received, msgs);
      if (Clock::now() > deadline) {
        timed_out = true;
        break;
      }
    }
    if (finished.load(std::memory_order_acquire) == config.producers) {
      // Every push has returned: what is left is queued now (the rest was dropped).
      for (;;) {
        batch.clear();
        const std::size_t n = queue.receive_batch(batch, 256, std::chrono::nanoseconds(0));
        if (n == 0)
          break;
        received += n;
        for (const T& item : batch)
          checksum += touch(item);
      }
      break;
    }
  }
  const auto stop = Clock::now();
  stopping.store(true);
  queue.close();
  for (auto& thread : producers)
    thread.join();
  if (timed_out) {
    throw Error("mailbox bench: " + std::to_string(received) + " of " + std::to_string(msgs) +
                " items received within " + std::to_string(config.common.timeout.count()) + " s");
  }
  if (checksum == 0 && received > 0 && config.size == 0 && msgs > 1) {
    throw Error("mailbox bench: items lost");  // also keeps the checksum alive
  }
  // Offered items per second: under the drop policies some of them were discarded.
  return {msgs, std::chrono::duration<double>(stop - start).count()};
}

template <class T>
void mailbox_series(const MailboxBenchConfig& config, BenchReport& report, std::ostream& err) {
  RateSeries mailbox{"mailbox", config.size, {}, ""};
  RateSeries baseline{"mutex+deque", config.size, {}, ""};
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    {
      ProgressBar progress(err, config.common.progress, "mailbox  rep " + std::to_string(rep + 1));
      Mailbox<T> queue(config.capacity, config.policy);
      mailbox.reps.push_back(run_queue_once<T>(queue, config, progress));
    }
    {
      ProgressBar progress(err, config.common.progress, "baseline rep " + std::to_string(rep + 1));
      BaselineQueue<T> queue(config.capacity, config.policy);
      baseline.reps.push_back(run_queue_once<T>(queue, config, progress));
    }
  }
  report.rates.push_back(mailbox);
  report.rates.push_back(baseline);
  const double base = median_rate(baseline);
  report.figures.push_back(
      {"ratio mailbox/mutex+deque", base > 0 ? median_rate(mailbox) / base : 0, "x"});
}

// ---- processes ---------------------------------------------------------------------------

std::string executable_of(const BenchCommon& common) {
  return common.executable.empty() ? self_executable() : common.executable;
}

/// The PMD the run uses: the one on --pmd-port, else a private `pmd --port 0`.
class BenchPmd {
 public:
  explicit BenchPmd(const BenchCommon& common) : port_(common.pmd_port) {
    if (port_ != 0)
      return;
    // Quiet: it logs every join and leave at info, and the churn makes thousands.
    child_ = std::make_unique<BenchChild>(std::vector<std::string>{
        executable_of(common), "--log-level", "warn", "pmd", "--port", "0"});
    const auto line = child_->read_line(kStartTimeout);
    const auto colon = line ? line->rfind(':') : std::string::npos;
    unsigned port = 0;
    if (colon != std::string::npos) {
      std::from_chars(line->data() + colon + 1, line->data() + line->size(), port);
    }
    if (port == 0 || port > 65535) {
      throw Error(
          "cannot start a private pmd: expected '127.0.0.1:PORT' as its first output line, got '" +
          line.value_or("<nothing>") + "'");
    }
    port_ = static_cast<std::uint16_t>(port);
  }
  std::uint16_t port() const { return port_; }
  /// The private PMD's pid; -1 with --pmd-port.
  int pid() const { return child_ ? child_->pid() : -1; }

 private:
  std::uint16_t port_;
  std::unique_ptr<BenchChild> child_;
};

std::vector<std::string> worker_argv(const BenchCommon& common, std::uint16_t pmd_port,
                                     std::string_view role,
                                     std::initializer_list<std::string> extra) {
  // Warnings only: a node logs every connection a finished peer closes at info.
  std::vector<std::string> argv{executable_of(common),
                                "--log-level",
                                "warn",
                                "bench",
                                "worker",
                                "--role",
                                std::string(role),
                                "--pmd-port",
                                std::to_string(pmd_port),
                                "--timeout",
                                std::to_string(common.timeout.count())};
  argv.insert(argv.end(), extra);
  return argv;
}

/// Reads the worker's `ready ...` line; returns what follows "ready ".
std::string expect_ready(BenchChild& child, std::string_view what) {
  const auto line = child.read_line(kStartTimeout);
  if (!line || !line->starts_with("ready")) {
    std::string why = line ? "'" + *line + "'" : "no output within 10 s";
    if (const auto code = child.wait(milliseconds(200)); code && !line) {
      why = "exited with code " + std::to_string(*code) + " (its error is above)";
    }
    throw Error("bench " + std::string(what) + " worker (pid " + std::to_string(child.pid()) +
                ") did not start: " + why);
  }
  return line->size() > 6 ? line->substr(6) : std::string();
}

Json expect_json(BenchChild& child, std::string_view what, std::chrono::seconds timeout) {
  const auto line = child.read_line(timeout + std::chrono::seconds(10));
  if (!line) {
    throw Error("bench " + std::string(what) + " worker (pid " + std::to_string(child.pid()) +
                ") gave no result");
  }
  Json result = Json::parse(*line, nullptr, false);
  if (result.is_discarded() || !result.is_object()) {
    throw Error("bench " + std::string(what) + " worker: unexpected output '" + *line + "'");
  }
  return result;
}

LatencySummary latency_from(const Json& j) {
  LatencySummary s;
  s.samples = j.value("samples", std::size_t{0});
  s.min = j.value("min_ns", 0.0);
  s.p50 = j.value("p50_ns", 0.0);
  s.p90 = j.value("p90_ns", 0.0);
  s.p99 = j.value("p99_ns", 0.0);
  s.p999 = j.value("p999_ns", 0.0);
  s.max = j.value("max_ns", 0.0);
  s.avg = j.value("avg_ns", 0.0);
  return s;
}

std::string unique_alias(std::string_view kind, unsigned rep) {
  return "bench-" + std::string(kind) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(rep);
}

// ---- a raw framed PMD connection (for pipelining, which the blocking client cannot) ----

class PmdConnection {
 public:
  explicit PmdConnection(std::uint16_t port) : decoder_(kDefaultNodeFrameLimit) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw Error("cannot connect to pmd 127.0.0.1:" + std::to_string(port) + ": " +
                  std::strerror(errno));
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~PmdConnection() { ::close(fd_); }
  PmdConnection(const PmdConnection&) = delete;
  PmdConnection& operator=(const PmdConnection&) = delete;

  /// Writes all of `bytes` while reading frames into the count; returns frames read.
  /// Reads until `expect` frames have arrived (pipelined: never blocks on a full socket).
  std::uint64_t exchange(std::string_view bytes, std::uint64_t expect, Clock::time_point deadline,
                         std::string* last = nullptr) {
    std::uint64_t frames = 0;
    while (frames < expect || !bytes.empty()) {
      pollfd pfd{fd_, static_cast<short>(POLLIN | (bytes.empty() ? 0 : POLLOUT)), 0};
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0)
        throw Error("pmd bench: no answer from the pmd in time");
      if (::poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
        throw Error(std::string("pmd bench: poll: ") + std::strerror(errno));
      }
      if ((pfd.revents & POLLOUT) && !bytes.empty()) {
        const ssize_t n = ::send(fd_, bytes.data(), std::min<std::size_t>(bytes.size(), 1 << 16),
                                 MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
          bytes.remove_prefix(static_cast<std::size_t>(n));
      }
      if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
        auto room = decoder_.prepare(1 << 16);
        const ssize_t n = ::recv(fd_, room.data(), room.size(), MSG_DONTWAIT);
        if (n == 0)
          throw Error("pmd bench: the pmd closed the connection");
        if (n > 0) {
          decoder_.commit(static_cast<std::size_t>(n));
          std::error_code ec;
          while (auto body = decoder_.next(ec)) {
            ++frames;
            if (last)
              last->assign(*body);
          }
          if (ec)
            throw Error("pmd bench: bad frame from the pmd");
        }
      }
    }
    return frames;
  }

  /// One request, one answer.
  std::string request(std::string_view body) {
    std::string frame, reply;
    append_frame(frame, body);
    exchange(frame, 1, Clock::now() + std::chrono::seconds(5), &reply);
    return reply;
  }

  /// Waits for a frame containing both needles; false at the deadline.
  bool wait_for(std::string_view a, std::string_view b, Clock::time_point deadline) {
    std::string body;
    while (Clock::now() < deadline) {
      exchange({}, 1, deadline, &body);
      if (body.find(a) != std::string::npos && body.find(b) != std::string::npos)
        return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  FrameDecoder decoder_;
};

std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0)
      ::close(fd);
    throw Error(std::string("cannot find a free loopback port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string pmd_request(std::string_view type, const std::string& payload, std::uint64_t id) {
  return R"({"type":")" + std::string(type) + R"(","payload":)" + payload + R"(,"requestId":)" +
         std::to_string(id) + "}";
}

}  // namespace

std::optional<PinMode> parse_pin_mode(std::string_view text) {
  if (text == "none")
    return PinMode::none;
  if (text == "same")
    return PinMode::same;
  if (text == "different")
    return PinMode::different;
  return std::nullopt;
}

// ---- payloads ------------------------------------------------------------------------------

void make_bench_payload(std::string& out, unsigned id, std::uint64_t seq, std::size_t size) {
  char buf[64];
  char* p = buf;
  std::memcpy(p, R"({"s":)", 5);
  p = std::to_chars(p + 5, buf + sizeof buf, id).ptr;
  std::memcpy(p, R"(,"q":)", 5);
  p = std::to_chars(p + 5, buf + sizeof buf, seq).ptr;
  out.assign(buf, p);
  constexpr std::size_t kPadOverhead = 8;  // ,"p":""}
  if (out.size() + kPadOverhead <= size) {
    out += R"(,"p":")";
    out.append(size - out.size() - 2, 'x');
    out += "\"}";
  } else {
    out += '}';
  }
}

bool parse_bench_payload(std::string_view payload, unsigned& id, std::uint64_t& seq) {
  if (!payload.starts_with(R"({"s":)"))
    return false;
  const char* end = payload.data() + payload.size();
  auto r = std::from_chars(payload.data() + 5, end, id);
  if (r.ec != std::errc() || end - r.ptr < 5 || std::string_view(r.ptr, 5) != R"(,"q":)") {
    return false;
  }
  return std::from_chars(r.ptr + 5, end, seq).ec == std::errc();
}

// ---- the benches ---------------------------------------------------------------------------

BenchReport run_mailbox_bench(const MailboxBenchConfig& config, std::ostream& out,
                              std::ostream& err) {
  BenchReport report;
  report.bench = "mailbox";
  report.params = {{"producers", std::to_string(config.producers)},
                   {"size", config.size ? std::to_string(config.size) + " B" : "8 B integer"},
                   {"policy", std::string(to_string(config.policy))},
                   {"capacity", std::to_string(config.capacity)},
                   {"batch", std::to_string(config.batch)},
                   {"msgs", count_param(config.msgs)},
                   {"reps", std::to_string(config.common.reps)}};
  begin(report, config.common, out);
  if (config.producers == 0 || config.capacity == 0 || config.batch == 0) {
    throw Error("mailbox bench: --producers, --capacity and --batch must be at least 1");
  }
  if (config.size == 0) {
    mailbox_series<std::uint64_t>(config, report, err);
  } else {
    mailbox_series<std::string>(config, report, err);
  }
  emit(report, config.common, out);
  return report;
}

BenchReport run_throughput_bench(const ThroughputBenchConfig& config, std::ostream& out,
                                 std::ostream& err) {
  BenchReport report;
  report.bench = "throughput";
  report.params = {{"msgs", count_param(config.msgs)},
                   {"size", std::to_string(config.size) + " B"},
                   {"senders", std::to_string(config.senders)},
                   {"target", config.target.empty() ? "private receiver" : config.target},
                   {"receiver", config.inline_receiver ? "inline" : "on_message"},
                   {"reps", std::to_string(config.common.reps)}};
  begin(report, config.common, out);
  if (config.senders == 0 || config.msgs < config.senders) {
    throw Error("throughput bench: need --senders >= 1 and --msgs >= --senders");
  }
  BenchPmd pmd(config.common);
  report.params.emplace_back("pmd", "127.0.0.1:" + std::to_string(pmd.port()));
  RateSeries e2e{"node->node", config.size, {}, ""};
  RateSeries sent{"senders (written to socket)", config.size, {}, ""};
  std::uint64_t lost = 0, reordered = 0, failures = 0;
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "throughput rep " + std::to_string(rep + 1));
    std::string target = config.target;
    std::unique_ptr<BenchChild> rx;
    if (target.empty()) {
      target = unique_alias("rx", rep);
      rx = std::make_unique<BenchChild>(
          worker_argv(config.common, pmd.port(), config.inline_receiver ? "rx-inline" : "rx",
                      {"--alias", target, "--msgs", std::to_string(config.msgs)}));
      expect_ready(*rx, "receiver");
    }
    std::vector<std::unique_ptr<BenchChild>> txs;
    for (unsigned i = 0; i < config.senders; ++i) {
      const std::uint64_t share =
          config.msgs / config.senders + (i == 0 ? config.msgs % config.senders : 0);
      txs.push_back(std::make_unique<BenchChild>(
          worker_argv(config.common, pmd.port(), "tx",
                      {"--alias", unique_alias("tx" + std::to_string(i), rep), "--target", target,
                       "--msgs", std::to_string(share), "--size", std::to_string(config.size),
                       "--id", std::to_string(i)})));
    }
    for (auto& tx : txs)
      expect_ready(*tx, "sender");
    std::uint64_t start = UINT64_MAX, end = 0, written = 0;
    for (auto& tx : txs) {
      const Json result = expect_json(*tx, "sender", config.common.timeout);
      start = std::min(start, result.value("start_ns", std::uint64_t{0}));
      end = std::max(end, result.value("end_ns", std::uint64_t{0}));
      written += result.value("sent", std::uint64_t{0});
      failures += result.value("failures", std::uint64_t{0});
      tx->stop();
    }
    sent.reps.push_back({written, static_cast<double>(end - start) / 1e9});
    if (rx) {
      const Json result = expect_json(*rx, "receiver", config.common.timeout);
      const auto received = result.value("received", std::uint64_t{0});
      const auto last = result.value("last_ns", std::uint64_t{0});
      lost += result.value("lost", std::uint64_t{0});
      reordered += result.value("reordered", std::uint64_t{0});
      e2e.reps.push_back({received, last > start ? static_cast<double>(last - start) / 1e9 : 0});
      rx->stop();
    }
    progress.update(rep + 1, config.common.reps);
  }
  const std::string note = "lost=" + std::to_string(lost) +
                           " reordered=" + std::to_string(reordered) +
                           " send_failures=" + std::to_string(failures);
  if (!e2e.reps.empty()) {
    e2e.note = note;
    report.rates.push_back(e2e);
  } else {
    sent.note = "send_failures=" + std::to_string(failures);
  }
  report.rates.push_back(sent);
  emit(report, config.common, out);
  return report;
}

BenchReport run_latency_bench(const LatencyBenchConfig& config, std::ostream& out,
                              std::ostream& err) {
  BenchReport report;
  report.bench = "latency";
  const char* pin = config.pin == PinMode::same        ? "same"
                    : config.pin == PinMode::different ? "different"
                                                       : "none";
  report.params = {{"round trips", count_param(config.msgs)},
                   {"size", std::to_string(config.size) + " B"},
                   {"pin", pin},
                   {"path", config.regular_path ? "regular" : "inline"},
                   {"reps", std::to_string(config.common.reps)}};
  const std::string pong_role = config.regular_path ? "pong-regular" : "pong";
  const std::string ping_role = config.regular_path ? "ping-regular" : "ping";
  begin(report, config.common, out);
  const int cpu_a = config.pin == PinMode::none ? -1 : 0;
  const int cpu_b = config.pin == PinMode::different ? 1 : cpu_a;
  BenchPmd pmd(config.common);
  LatencySeries node{"node<->node", {}};
  LatencySeries raw{"raw TCP", {}};
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "latency rep " + std::to_string(rep + 1));
    {
      const std::string alias = unique_alias("pong", rep);
      BenchChild pong(worker_argv(config.common, pmd.port(), pong_role, {"--alias", alias}), cpu_a);
      expect_ready(pong, "pong");
      BenchChild ping(
          worker_argv(config.common, pmd.port(), ping_role,
                      {"--alias", unique_alias("ping", rep), "--target", alias, "--msgs",
                       std::to_string(config.msgs), "--size", std::to_string(config.size)}),
          cpu_b);
      expect_ready(ping, "ping");
      node.reps.push_back(latency_from(expect_json(ping, "ping", config.common.timeout)));
    }
    if (config.raw_baseline) {
      BenchChild pong(worker_argv(config.common, pmd.port(), "raw-pong", {}), cpu_a);
      const std::string port = expect_ready(pong, "raw-pong");
      BenchChild ping(worker_argv(config.common, pmd.port(), "raw-ping",
                                  {"--port", port, "--msgs", std::to_string(config.msgs), "--size",
                                   std::to_string(config.size)}),
                      cpu_b);
      expect_ready(ping, "raw-ping");
      raw.reps.push_back(latency_from(expect_json(ping, "raw-ping", config.common.timeout)));
    }
    progress.update(rep + 1, config.common.reps);
  }
  report.latencies.push_back(node);
  if (config.raw_baseline) {
    report.latencies.push_back(raw);
    for (auto [label, field] :
         {std::pair{"p50", &LatencySummary::p50}, std::pair{"p99", &LatencySummary::p99}}) {
      const double base = median_of(raw, field);
      report.figures.push_back({std::string("ratio ") + label + " node/raw",
                                base > 0 ? median_of(node, field) / base : 0, "x"});
    }
  }
  emit(report, config.common, out);
  return report;
}

BenchReport run_pmd_bench(const PmdBenchConfig& config, std::ostream& out, std::ostream& err) {
  BenchReport report;
  report.bench = "pmd";
  report.params = {{"resolves", count_param(config.resolves)},
                   {"churn", count_param(config.churn)},
                   {"reps", std::to_string(config.common.reps)}};
  begin(report, config.common, out);
  BenchPmd pmd(config.common);
  // Before any load: the allocator keeps what the resolve storm below makes it take.
  const std::uint64_t pmd_rss_kib = pmd.pid() > 0 ? resident_kib(pmd.pid()) : 0;
  std::uint64_t node_rss_kib = 0;
  const std::string alias = unique_alias("target", 0);
  PmdConnection owner(pmd.port());
  const std::string registered = owner.request(pmd_request(
      "register",
      R"({"nodeId":")" + alias + R"(-id","alias":")" + alias + R"(","host":"127.0.0.1","port":1})",
      1));
  if (registered.find("\"success\":true") == std::string::npos) {
    throw Error("pmd bench: cannot register '" + alias + "': " + registered);
  }
  const std::string resolve_payload = R"({"alias":")" + alias + R"("})";
  RateSeries pipelined{"resolve pipelined", 0, {}, ""};
  RateSeries serial{"resolve one at a time", 0, {}, ""};
  RateSeries churn{"register+unregister", 0, {}, ""};
  std::vector<double> leave_us, start_ms, auto_ms;
  PmdConnection watcher(pmd.port());
  watcher.request(pmd_request("watch", "{}", 1));
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "pmd rep " + std::to_string(rep + 1));
    const auto deadline = Clock::now() + config.common.timeout;
    {
      PmdConnection client(pmd.port());
      std::string frames;
      for (std::uint64_t i = 0; i < config.resolves; ++i) {
        append_frame(frames, pmd_request("resolve", resolve_payload, i));
      }
      const auto t0 = Clock::now();
      client.exchange(frames, config.resolves, deadline);
      pipelined.reps.push_back(
          {config.resolves, std::chrono::duration<double>(Clock::now() - t0).count()});
      const std::uint64_t one_by_one = std::max<std::uint64_t>(config.resolves / 10, 1);
      std::string frame;
      append_frame(frame, pmd_request("resolve", resolve_payload, 7));
      const auto t1 = Clock::now();
      for (std::uint64_t i = 0; i < one_by_one; ++i)
        client.exchange(frame, 1, deadline);
      serial.reps.push_back({one_by_one, std::chrono::duration<double>(Clock::now() - t1).count()});
    }
    {
      PmdConnection client(pmd.port());
      const std::string id = unique_alias("churn", rep);
      std::string reg, unreg;
      append_frame(
          reg,
          pmd_request("register", R"({"nodeId":")" + id + R"(","host":"127.0.0.1","port":2})", 1));
      append_frame(unreg, pmd_request("unregister", R"({"nodeId":")" + id + R"("})", 2));
      const auto t0 = Clock::now();
      for (std::uint64_t i = 0; i < config.churn; ++i) {
        client.exchange(reg, 1, deadline);
        client.exchange(unreg, 1, deadline);
      }
      churn.reps.push_back(
          {config.churn, std::chrono::duration<double>(Clock::now() - t0).count()});
    }
    {
      // Crash -> peer:leave, and process start -> registered (PMD already running).
      const std::string victim = unique_alias("idle", rep);
      const auto t0 = Clock::now();
      BenchChild idle(worker_argv(config.common, pmd.port(), "idle", {"--alias", victim}));
      expect_ready(idle, "idle");
      start_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      node_rss_kib = std::max(node_rss_kib, resident_kib(idle.pid()));
      if (!watcher.wait_for("peer:join", victim, Clock::now() + kStartTimeout)) {
        throw Error("pmd bench: no peer:join for '" + victim + "'");
      }
      const std::uint64_t killed = monotonic_ns();
      idle.kill_now();
      if (!watcher.wait_for("peer:leave", victim, Clock::now() + kStartTimeout)) {
        throw Error("pmd bench: no peer:leave within 10 s of SIGKILL of '" + victim + "'");
      }
      leave_us.push_back(static_cast<double>(monotonic_ns() - killed) / 1e3);
    }
    {
      // Process start -> registered when the node must auto-start the PMD first
      // (a fresh port each time); that PMD is then told to shut down.
      const std::uint16_t port = free_loopback_port();
      const auto t0 = Clock::now();
      BenchChild idle(worker_argv(config.common, port, "idle",
                                  {"--alias", unique_alias("auto", rep), "--auto-pmd"}));
      expect_ready(idle, "idle");
      auto_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      idle.stop();
      PmdConnection(port).request(pmd_request("shutdown", R"({"force":true})", 1));
    }
    progress.update(rep + 1, config.common.reps);
  }
  report.rates = {pipelined, serial, churn};
  const Summary leave = summarize(leave_us);
  const Summary start = summarize(start_ms);
  report.figures.push_back({"SIGKILL -> peer:leave median", leave.median, "us"});
  report.figures.push_back({"SIGKILL -> peer:leave max", leave.max, "us"});
  report.figures.push_back({"node process start -> registered median", start.median, "ms"});
  report.figures.push_back({"node process start -> registered, pmd auto-started, median",
                            summarize(auto_ms).median, "ms"});
  if (pmd_rss_kib > 0) {
    report.figures.push_back({"idle RSS pmd", static_cast<double>(pmd_rss_kib) / 1024, "MiB"});
  }
  report.figures.push_back(
      {"idle RSS node (max)", static_cast<double>(node_rss_kib) / 1024, "MiB"});
  emit(report, config.common, out);
  return report;
}

}  // namespace distflow
