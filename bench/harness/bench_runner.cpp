#include "bench_runner.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
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
#include "bench_remote.hpp"
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

LatencySummary latency_from(const Json& j);

const char* pin_name(PinMode pin) {
  return pin == PinMode::same ? "same" : pin == PinMode::different ? "different" : "none";
}

// One raw TCP ping-pong run (the baseline of the latency and call benches). `split`:
// over two one-way connections, the shape of two nodes' links (each writes on the
// connection it opened), instead of one connection both ways.
LatencySummary raw_round_trips(const BenchCommon& common, std::uint16_t pmd_port,
                               std::uint64_t msgs, std::size_t size, int cpu_pong, int cpu_ping,
                               bool split = false) {
  std::vector<std::string> pong_argv = worker_argv(common, pmd_port, "raw-pong", {});
  if (split)
    pong_argv.emplace_back("--split");
  BenchChild pong(pong_argv, cpu_pong);
  const std::string port = expect_ready(pong, "raw-pong");
  std::vector<std::string> ping_argv =
      worker_argv(common, pmd_port, "raw-ping",
                  {"--port", port, "--msgs", std::to_string(msgs), "--size", std::to_string(size)});
  if (split)
    ping_argv.emplace_back("--split");
  BenchChild ping(ping_argv, cpu_ping);
  expect_ready(ping, "raw-ping");
  return latency_from(expect_json(ping, "raw-ping", common.timeout));
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

const char* path_name(LatencyPath path) {
  return path == LatencyPath::regular ? "regular" : "inline";
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

// ---- throughput ------------------------------------------------------------------------

/// What one receiver counted.
struct ReceiverCount {
  std::uint64_t received = 0, lost = 0, reordered = 0;
};

/// One run of sender and receiver processes.
struct FlowResult {
  RateSample received;  ///< received ÷ (last arrival − first sender's start)
  RateSample written;   ///< the senders' own: written ÷ (last end − first start)
  std::uint64_t failures = 0;
  std::vector<ReceiverCount> receivers;
};

/// `senders` tx processes into one receiver, or one tx round-robin to `receivers`
/// receivers (or `config.target`). Aliases are `kind`-tagged so runs never share one.
FlowResult node_flow(const ThroughputBenchConfig& config, std::uint16_t pmd_port,
                     std::string_view kind, unsigned rep, unsigned senders, unsigned receivers) {
  const BenchCommon& common = config.common;
  std::vector<std::string> targets;
  std::vector<std::unique_ptr<BenchChild>> rxs;
  if (!config.target.empty()) {
    targets.push_back(config.target);
  } else {
    for (unsigned r = 0; r < receivers; ++r) {
      // The tx sends message i to receiver i % receivers.
      const std::uint64_t share = config.msgs / receivers + (r < config.msgs % receivers ? 1 : 0);
      targets.push_back(unique_alias(std::string(kind) + "-rx" + std::to_string(r), rep));
      rxs.push_back(std::make_unique<BenchChild>(
          worker_argv(common, pmd_port, config.inline_receiver ? "rx-inline" : "rx",
                      {"--alias", targets.back(), "--msgs", std::to_string(share)})));
    }
    for (auto& rx : rxs)
      expect_ready(*rx, "receiver");
  }
  std::vector<std::unique_ptr<BenchChild>> txs;
  for (unsigned i = 0; i < senders; ++i) {
    const std::uint64_t share = config.msgs / senders + (i == 0 ? config.msgs % senders : 0);
    std::vector<std::string> argv = worker_argv(
        common, pmd_port, "tx",
        {"--alias", unique_alias(std::string(kind) + "-tx" + std::to_string(i), rep), "--msgs",
         std::to_string(share), "--size", std::to_string(config.size), "--id", std::to_string(i)});
    for (const std::string& target : targets) {
      argv.push_back("--target");
      argv.push_back(target);
    }
    txs.push_back(std::make_unique<BenchChild>(argv));
  }
  for (auto& tx : txs)
    expect_ready(*tx, "sender");
  FlowResult flow;
  std::uint64_t start = UINT64_MAX, end = 0, written = 0;
  for (auto& tx : txs) {
    const Json result = expect_json(*tx, "sender", common.timeout);
    start = std::min(start, result.value("start_ns", std::uint64_t{0}));
    end = std::max(end, result.value("end_ns", std::uint64_t{0}));
    written += result.value("sent", std::uint64_t{0});
    flow.failures += result.value("failures", std::uint64_t{0});
    tx->stop();
  }
  flow.written = {written, static_cast<double>(end - start) / 1e9};
  std::uint64_t received = 0, last = 0;
  for (auto& rx : rxs) {
    const Json result = expect_json(*rx, "receiver", common.timeout);
    ReceiverCount count;
    count.received = result.value("received", std::uint64_t{0});
    count.lost = result.value("lost", std::uint64_t{0});
    count.reordered = result.value("reordered", std::uint64_t{0});
    received += count.received;
    last = std::max(last, result.value("last_ns", std::uint64_t{0}));
    flow.receivers.push_back(count);
    rx->stop();
  }
  flow.received = {received, last > start ? static_cast<double>(last - start) / 1e9 : 0};
  return flow;
}

/// The limit: raw-tx writes the same envelope frames a node would (encoded once)
/// in 1 MiB writes; raw-rx reads 256 KiB at a time and only walks the length prefixes.
FlowResult raw_flow(const ThroughputBenchConfig& config, std::uint16_t pmd_port, unsigned rep) {
  const BenchCommon& common = config.common;
  BenchChild rx(worker_argv(common, pmd_port, "raw-rx", {"--msgs", std::to_string(config.msgs)}));
  const std::string port = expect_ready(rx, "raw-rx");
  // The aliases of the 1 -> 1 node run: envelopes of the same length.
  BenchChild tx(worker_argv(common, pmd_port, "raw-tx",
                            {"--port", port, "--alias", unique_alias("one-tx0", rep), "--target",
                             unique_alias("one-rx0", rep), "--msgs", std::to_string(config.msgs),
                             "--size", std::to_string(config.size)}));
  expect_ready(tx, "raw-tx");
  const Json sent = expect_json(tx, "raw-tx", common.timeout);
  const Json got = expect_json(rx, "raw-rx", common.timeout);
  tx.stop();
  rx.stop();
  const auto start = sent.value("start_ns", std::uint64_t{0});
  const auto end = sent.value("end_ns", std::uint64_t{0});
  const auto last = got.value("last_ns", std::uint64_t{0});
  FlowResult flow;
  flow.written = {sent.value("sent", std::uint64_t{0}), static_cast<double>(end - start) / 1e9};
  ReceiverCount count;
  count.received = got.value("received", std::uint64_t{0});
  count.lost = got.value("lost", std::uint64_t{0});
  flow.receivers.push_back(count);
  flow.received = {count.received, last > start ? static_cast<double>(last - start) / 1e9 : 0};
  return flow;
}

/// Totals of a series of runs, and the per-receiver sums, as a report note.
std::string flow_note(const std::vector<FlowResult>& flows, bool per_receiver) {
  std::vector<ReceiverCount> sums;
  std::uint64_t failures = 0;
  for (const FlowResult& flow : flows) {
    failures += flow.failures;
    sums.resize(std::max(sums.size(), flow.receivers.size()));
    for (std::size_t r = 0; r < flow.receivers.size(); ++r) {
      sums[r].received += flow.receivers[r].received;
      sums[r].lost += flow.receivers[r].lost;
      sums[r].reordered += flow.receivers[r].reordered;
    }
  }
  ReceiverCount total;
  for (const ReceiverCount& sum : sums) {
    total.lost += sum.lost;
    total.reordered += sum.reordered;
  }
  std::string note = "lost=" + std::to_string(total.lost) +
                     " reordered=" + std::to_string(total.reordered) +
                     " send_failures=" + std::to_string(failures);
  if (per_receiver) {
    auto column = [&](const char* name, std::uint64_t ReceiverCount::*field) {
      note += std::string(" ") + name + "=";
      for (std::size_t r = 0; r < sums.size(); ++r)
        note += (r ? "/" : "") + std::to_string(sums[r].*field);
    };
    note += " | per receiver:";
    column("received", &ReceiverCount::received);
    column("lost", &ReceiverCount::lost);
    column("reordered", &ReceiverCount::reordered);
  }
  return note;
}

void flow_series(const ThroughputBenchConfig& config, std::uint16_t pmd_port, BenchReport& report,
                 std::ostream& err) {
  if (!config.target.empty()) {
    // An existing node: the senders' own rate only (nothing counts at the far end).
    RateSeries sent{"senders (written to socket)", config.size, {}, ""};
    std::vector<FlowResult> flows;
    for (unsigned rep = 0; rep < config.common.reps; ++rep) {
      ProgressBar progress(err, config.common.progress,
                           "throughput rep " + std::to_string(rep + 1));
      flows.push_back(node_flow(config, pmd_port, "tx", rep, config.senders, 1));
      sent.reps.push_back(flows.back().written);
    }
    std::uint64_t failures = 0;
    for (const FlowResult& flow : flows)
      failures += flow.failures;
    sent.note = "send_failures=" + std::to_string(failures);
    report.rates.push_back(sent);
    return;
  }
  const std::string fan_in = std::to_string(config.senders) + " senders";
  const std::string fan_out = std::to_string(config.receivers) + " receivers";
  RateSeries one{"node->node", config.size, {}, ""};
  RateSeries sent{"sender (written to socket)", config.size, {}, ""};
  RateSeries raw{"raw TCP (same frames, no parsing)", config.size, {}, ""};
  RateSeries in{"node->node " + fan_in + " -> 1 receiver", config.size, {}, ""};
  RateSeries outward{"node->node 1 sender -> " + fan_out, config.size, {}, ""};
  std::vector<FlowResult> one_flows, raw_flows, in_flows, out_flows;
  enum class Leg { raw_tcp, one_to_one, many_to_one, one_to_many };
  std::vector<Leg> legs{Leg::one_to_one};
  if (config.raw_baseline)
    legs.insert(legs.begin(), Leg::raw_tcp);
  if (config.senders > 1)
    legs.push_back(Leg::many_to_one);
  if (config.receivers > 1)
    legs.push_back(Leg::one_to_many);
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "throughput rep " + std::to_string(rep + 1));
    for (Leg leg : legs) {
      switch (leg) {
        case Leg::raw_tcp:
          raw_flows.push_back(raw_flow(config, pmd_port, rep));
          raw.reps.push_back(raw_flows.back().received);
          break;
        case Leg::one_to_one:
          one_flows.push_back(node_flow(config, pmd_port, "one", rep, 1, 1));
          one.reps.push_back(one_flows.back().received);
          sent.reps.push_back(one_flows.back().written);
          break;
        case Leg::many_to_one:
          in_flows.push_back(node_flow(config, pmd_port, "in", rep, config.senders, 1));
          in.reps.push_back(in_flows.back().received);
          break;
        case Leg::one_to_many:
          out_flows.push_back(node_flow(config, pmd_port, "out", rep, 1, config.receivers));
          outward.reps.push_back(out_flows.back().received);
          break;
      }
      progress.update(rep * legs.size() + 1, config.common.reps * legs.size());
    }
    std::reverse(legs.begin(), legs.end());  // alternate the order: no leg always goes first
  }
  one.note = flow_note(one_flows, false);
  report.rates.push_back(one);
  report.rates.push_back(sent);
  if (config.raw_baseline) {
    std::uint64_t raw_lost = 0;  // frames are counted, not read: no order, no send failure
    for (const FlowResult& flow : raw_flows)
      raw_lost += flow.receivers.empty() ? 0 : flow.receivers[0].lost;
    raw.note = "lost=" + std::to_string(raw_lost);
    report.rates.push_back(raw);
    report.figures.push_back(
        {"ratio node/raw (median of per-rep ratios)", median_ratio(one, raw), "x"});
  }
  if (config.senders > 1) {
    in.note = flow_note(in_flows, false);
    report.rates.push_back(in);
    report.figures.push_back(
        {"ratio " + fan_in + "/1 sender (median of per-rep ratios)", median_ratio(in, one), "x"});
  }
  if (config.receivers > 1) {
    outward.note = flow_note(out_flows, true);
    report.rates.push_back(outward);
    report.figures.push_back({"ratio " + fan_out + "/1 receiver (median of per-rep ratios)",
                              median_ratio(outward, one), "x"});
  }
}

/// A file removed when the run ends.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  ~TempFile() { ::unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Waits until `alias` resolves at the PMD (a node has registered it).
void wait_registered(std::uint16_t pmd_port, const std::string& alias, BenchChild& node) {
  PmdConnection pmd(pmd_port);
  const auto deadline = Clock::now() + kStartTimeout;
  for (std::uint64_t id = 1;; ++id) {
    const std::string reply =
        pmd.request(pmd_request("resolve", R"({"alias":")" + alias + R"("})", id));
    if (reply.find(R"("node":{)") != std::string::npos)
      return;
    if (const auto code = node.wait(milliseconds(0))) {
      throw Error("bench node '" + alias + "' exited with code " + std::to_string(*code) +
                  " before registering (its error is above)");
    }
    if (Clock::now() > deadline)
      throw Error("bench node '" + alias + "' did not register within 10 s");
    std::this_thread::sleep_for(milliseconds(2));
  }
}

/// What the bench read from the node's stdout.
struct LineCount {
  std::uint64_t lines = 0;
  std::uint64_t last_ns = 0;  ///< when the read holding the last newline returned
  std::string last_line;      ///< the last complete line
};

/// Counts newlines in `data` (one read) into `count`, keeping the last line. As cheap
/// as the reader can be (libc's vectorised memchr, not a byte loop: this process
/// shares the two vCPUs with the pipeline it measures), like `> /dev/null`.
void count_lines(const char* data, std::size_t n, std::string& partial, LineCount& count) {
  std::uint64_t found = 0;
  const char* end = data + n;
  for (const char* p = data;
       (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p))));
       ++p) {
    ++found;
  }
  if (found == 0) {
    if (partial.size() < (1u << 20))
      partial.append(data, n);
    return;
  }
  count.lines += found;
  const char* last = static_cast<const char*>(::memrchr(data, '\n', n));
  const char* prev =
      static_cast<const char*>(::memrchr(data, '\n', static_cast<std::size_t>(last - data)));
  if (prev) {
    count.last_line.assign(prev + 1, last);
  } else {
    count.last_line = partial;
    count.last_line.append(data, last);
  }
  partial.assign(last + 1, data + n);
}

/// True when `line` (a node's NDJSON output line) carries payload (0, seq).
bool line_has_seq(const std::string& line, std::uint64_t seq) {
  constexpr std::string_view kKey = R"("payload":)";
  const auto at = line.find(kKey);
  unsigned id = 0;
  std::uint64_t got = 0;
  return at != std::string::npos &&
         parse_bench_payload(std::string_view(line).substr(at + kKey.size()), id, got) && id == 0 &&
         got == seq;
}

/// The shell user's path: `distflow send ALIAS - < FILE` → `distflow node --alias
/// ALIAS` → NDJSON on the node's stdout, a pipe the bench reads in 256 KiB reads,
/// counting newlines. The rate is lines ÷ (last line counted − send's spawn).
void cli_series(const ThroughputBenchConfig& config, std::uint16_t pmd_port, BenchReport& report,
                std::ostream& err) {
  const BenchCommon& common = config.common;
  const std::string exe = executable_of(common);
  TempFile file("/tmp/distflow-bench-cli-" + std::to_string(::getpid()) + ".ndjson");
  {
    std::ofstream lines(file.path(), std::ios::binary | std::ios::trunc);
    std::string payload, chunk;
    for (std::uint64_t seq = 0; seq < config.msgs; ++seq) {
      make_bench_payload(payload, 0, seq, config.size);
      chunk += payload;
      chunk += '\n';
      if (chunk.size() > (1u << 20)) {
        lines.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
        chunk.clear();
      }
    }
    lines.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    if (!lines.flush())
      throw Error("cannot write '" + file.path() + "'");
  }
  RateSeries cli{"send - -> node -> pipe", config.size, {}, "", "lines"};
  std::uint64_t lost = 0, bad_tails = 0;
  std::vector<char> buf(256 * 1024);
  for (unsigned rep = 0; rep < common.reps; ++rep) {
    ProgressBar progress(err, common.progress, "throughput rep " + std::to_string(rep + 1));
    const std::string alias = unique_alias("cli", rep);
    // stdin /dev/null: the node receives until SIGTERM; stdout: our pipe.
    BenchChild node({exe, "--log-level", "warn", "node", "--alias", alias, "-p",
                     std::to_string(pmd_port), "--no-auto-pmd"});
    wait_registered(pmd_port, alias, node);
    LineCount count;
    std::string partial;
    const auto deadline = Clock::now() + common.timeout;
    const std::uint64_t start = monotonic_ns();
    // The shell's redirection, as a user types it (exec: the pid is send's).
    BenchChild send({"/bin/sh", "-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh", file.path(), exe,
                     "--log-level", "warn", "send", "-p", std::to_string(pmd_port), alias, "-"});
    std::optional<int> send_code;
    auto last_byte = Clock::now();
    while (count.lines < config.msgs) {
      const auto n = node.read_some(buf.data(), buf.size(), milliseconds(100));
      if (n && *n == 0)
        break;  // the node's output closed: it has exited
      if (n) {
        const std::uint64_t before = count.lines;
        count_lines(buf.data(), *n, partial, count);
        if (count.lines != before)
          count.last_ns = monotonic_ns();
        last_byte = Clock::now();
      }
      if (!send_code)
        send_code = send.wait(milliseconds(0));
      // Everything send wrote has had 2 s to come out, or the deadline passed.
      if ((send_code && Clock::now() - last_byte > std::chrono::seconds(2)) ||
          Clock::now() > deadline) {
        break;
      }
      progress.update(rep * config.msgs + count.lines, common.reps * config.msgs);
    }
    if (!send_code)
      send_code = send.wait(std::chrono::duration_cast<milliseconds>(common.timeout));
    send.stop();
    node.stop();
    if (!send_code || *send_code != 0) {
      throw Error("throughput bench: distflow send " +
                  (send_code ? "exited with code " + std::to_string(*send_code)
                             : std::string("did not exit")) +
                  " (its error is above)");
    }
    lost += config.msgs > count.lines ? config.msgs - count.lines : 0;
    if (count.lines == config.msgs && !line_has_seq(count.last_line, config.msgs - 1))
      ++bad_tails;
    cli.reps.push_back({count.lines, count.last_ns > start
                                         ? static_cast<double>(count.last_ns - start) / 1e9
                                         : 0});
  }
  cli.note =
      "lost=" + std::to_string(lost) + " last_line_out_of_order=" + std::to_string(bad_tails);
  report.rates.push_back(cli);
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

std::optional<std::vector<LatencyPath>> parse_latency_paths(std::string_view text) {
  std::vector<LatencyPath> paths;
  for (;;) {
    const auto comma = text.find(',');
    const std::string_view name = text.substr(0, comma);
    if (name == "inline") {
      paths.push_back(LatencyPath::inline_handler);
    } else if (name == "regular") {
      paths.push_back(LatencyPath::regular);
    } else {
      return std::nullopt;
    }
    if (comma == std::string_view::npos)
      return paths;
    text.remove_prefix(comma + 1);
  }
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
  if (config.remote)
    return run_remote_throughput_bench(config, out, err);
  BenchReport report;
  report.bench = "throughput";
  report.params = {{"msgs", count_param(config.msgs)},
                   {"size", std::to_string(config.size) + " B"}};
  if (config.via_cli) {
    report.params.emplace_back("path", "send - < FILE -> node > pipe");
  } else {
    report.params.emplace_back("senders", std::to_string(config.senders));
    report.params.emplace_back("receivers", std::to_string(config.receivers));
    report.params.emplace_back("target",
                               config.target.empty() ? "private receiver" : config.target);
    report.params.emplace_back("receiver", config.inline_receiver ? "inline" : "on_message");
    report.params.emplace_back("raw", config.raw_baseline && config.target.empty() ? "yes" : "no");
  }
  report.params.emplace_back("reps", std::to_string(config.common.reps));
  begin(report, config.common, out);
  if (config.senders == 0 || config.receivers == 0 || config.msgs < config.senders ||
      config.msgs < config.receivers) {
    throw Error(
        "throughput bench: need --senders >= 1, --receivers >= 1, and --msgs at least as many");
  }
  if (config.senders > 1 && config.receivers > 1)
    throw Error("throughput bench: --senders and --receivers cannot both be above 1");
  if (!config.target.empty() && (config.receivers > 1 || config.via_cli))
    throw Error("throughput bench: --target goes with neither --receivers nor --via-cli");
  if (config.via_cli && (config.senders > 1 || config.receivers > 1))
    throw Error("throughput bench: --via-cli is one send into one node");
  BenchPmd pmd(config.common);
  report.params.emplace_back("pmd", "127.0.0.1:" + std::to_string(pmd.port()));
  if (config.via_cli) {
    cli_series(config, pmd.port(), report, err);
  } else {
    flow_series(config, pmd.port(), report, err);
  }
  emit(report, config.common, out);
  return report;
}

BenchReport run_latency_bench(const LatencyBenchConfig& config, std::ostream& out,
                              std::ostream& err) {
  BenchReport report;
  report.bench = "latency";
  const char* pin = pin_name(config.pin);
  std::string paths;
  for (LatencyPath path : config.paths)
    paths += (paths.empty() ? "" : ",") + std::string(path_name(path));
  report.params = {{"round trips", count_param(config.msgs)},
                   {"size", std::to_string(config.size) + " B"},
                   {"pin", pin},
                   {"path", paths},
                   {"reps", std::to_string(config.common.reps)}};
  begin(report, config.common, out);
  if (config.paths.empty())
    throw Error("latency bench: no path to measure");
  const int cpu_a = config.pin == PinMode::none ? -1 : 0;
  const int cpu_b = config.pin == PinMode::different ? 1 : cpu_a;
  BenchPmd pmd(config.common);
  // One leg per node path, then raw TCP over one connection and over two one-way
  // ones (the shape of two nodes' links); the order alternates from one rep to the next.
  std::vector<LatencySeries> series;
  for (LatencyPath path : config.paths)
    series.push_back({"node<->node " + std::string(path_name(path)), {}});
  LatencySeries raw{"raw TCP", {}};
  LatencySeries raw_split{"raw TCP, two one-way connections", {}};
  // Index into `series`; series.size(): raw, series.size() + 1: raw_split.
  std::vector<std::size_t> legs;
  for (std::size_t i = 0; i <= series.size() + 1; ++i) {
    if (i < series.size() || config.raw_baseline)
      legs.push_back(i);
  }
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "latency rep " + std::to_string(rep + 1));
    for (std::size_t leg : legs) {
      if (leg >= series.size()) {
        const bool split = leg > series.size();
        (split ? raw_split : raw)
            .reps.push_back(raw_round_trips(config.common, pmd.port(), config.msgs, config.size,
                                            cpu_a, cpu_b, split));
        continue;
      }
      const bool regular = config.paths[leg] == LatencyPath::regular;
      const std::string alias = unique_alias(regular ? "pong-r" : "pong-i", rep);
      BenchChild pong(worker_argv(config.common, pmd.port(), regular ? "pong-regular" : "pong",
                                  {"--alias", alias}),
                      cpu_a);
      expect_ready(pong, "pong");
      BenchChild ping(worker_argv(config.common, pmd.port(), regular ? "ping-regular" : "ping",
                                  {"--alias", unique_alias(regular ? "ping-r" : "ping-i", rep),
                                   "--target", alias, "--msgs", std::to_string(config.msgs),
                                   "--size", std::to_string(config.size)}),
                      cpu_b);
      expect_ready(ping, "ping");
      series[leg].reps.push_back(latency_from(expect_json(ping, "ping", config.common.timeout)));
    }
    std::reverse(legs.begin(), legs.end());
    progress.update(rep + 1, config.common.reps);
  }
  report.latencies = series;
  if (config.raw_baseline) {
    report.latencies.push_back(raw);
    report.latencies.push_back(raw_split);
    const auto ratio = [](const LatencySeries& a, const LatencySeries& b,
                          double LatencySummary::*field) {
      const double base = median_of(b, field);
      return base > 0 ? median_of(a, field) / base : 0;
    };
    for (std::size_t i = 0; i < series.size(); ++i) {
      for (auto [label, field] :
           {std::pair{"p50", &LatencySummary::p50}, std::pair{"p99", &LatencySummary::p99}}) {
        report.figures.push_back(
            {std::string("ratio ") + label + " " + path_name(config.paths[i]) + "/raw",
             ratio(series[i], raw, field), "x"});
      }
    }
    // The part of the gap the wire's shape sets (one-way links), and the rest.
    report.figures.push_back(
        {"ratio p50 raw two one-way/raw", ratio(raw_split, raw, &LatencySummary::p50), "x"});
    for (std::size_t i = 0; i < series.size(); ++i) {
      report.figures.push_back(
          {std::string("ratio p50 ") + path_name(config.paths[i]) + "/raw two one-way",
           ratio(series[i], raw_split, &LatencySummary::p50), "x"});
    }
  }
  emit(report, config.common, out);
  return report;
}

BenchReport run_call_bench(const CallBenchConfig& config, std::ostream& out, std::ostream& err) {
  BenchReport report;
  report.bench = "call";
  std::string inflight;
  for (unsigned n : config.inflight)
    inflight += (inflight.empty() ? "" : ",") + std::to_string(n);
  const char* pin = pin_name(config.pin);
  report.params = {{"round trips", count_param(config.msgs)},
                   {"size", std::to_string(config.size) + " B"},
                   {"pin", pin},
                   {"in flight", inflight},
                   {"reps", std::to_string(config.common.reps)}};
  begin(report, config.common, out);
  const int cpu_a = config.pin == PinMode::none ? -1 : 0;
  const int cpu_b = config.pin == PinMode::different ? 1 : cpu_a;
  BenchPmd pmd(config.common);
  LatencySeries callback{"call() callback", {}}, future{"call() future", {}}, raw{"raw TCP", {}};
  std::vector<RateSeries> rates;
  for (unsigned n : config.inflight)
    rates.push_back({"calls, " + std::to_string(n) + " in flight", 0, {}, "", "calls"});
  std::string inflight_arg = inflight;
  bool raw_first = true;
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "call rep " + std::to_string(rep + 1));
    for (int leg = 0; leg < 2; ++leg) {
      if ((leg == 0) == raw_first) {
        raw.reps.push_back(
            raw_round_trips(config.common, pmd.port(), config.msgs, config.size, cpu_a, cpu_b));
        continue;
      }
      const std::string alias = unique_alias("call-server", rep);
      BenchChild server(worker_argv(config.common, pmd.port(), "call-server", {"--alias", alias}),
                        cpu_a);
      expect_ready(server, "call-server");
      BenchChild client(worker_argv(config.common, pmd.port(), "call-client",
                                    {"--alias", unique_alias("call-client", rep), "--target", alias,
                                     "--msgs", std::to_string(config.msgs), "--size",
                                     std::to_string(config.size), "--inflight", inflight_arg}),
                        cpu_b);
      expect_ready(client, "call-client");
      const Json result = expect_json(client, "call-client", config.common.timeout);
      callback.reps.push_back(latency_from(result.at("callback")));
      future.reps.push_back(latency_from(result.at("future")));
      for (std::size_t i = 0; i < config.inflight.size(); ++i) {
        const Json& run = result.at("rates").at(std::to_string(config.inflight[i]));
        rates[i].reps.push_back(
            {run.at("calls").get<std::uint64_t>(), run.at("seconds").get<double>()});
      }
    }
    raw_first = !raw_first;
    progress.update(rep + 1, config.common.reps);
  }
  report.latencies = {callback, future, raw};
  report.rates = rates;
  for (const LatencySeries* series : {&callback, &future}) {
    for (auto [label, field] :
         {std::pair{"p50", &LatencySummary::p50}, std::pair{"p99", &LatencySummary::p99}}) {
      const double base = median_of(raw, field);
      report.figures.push_back({"ratio " + std::string(label) + " " + series->name + "/raw",
                                base > 0 ? median_of(*series, field) / base : 0, "x"});
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

// ---- cluster (issue 15) ---------------------------------------------------------------

namespace {

/// The etcd the cluster bench uses: --etcd, else a private single member.
class BenchEtcd {
 public:
  explicit BenchEtcd(const std::string& url) : url_(url) {
    if (!url_.empty())
      return;
    char dir[] = "/tmp/distflow-bench-etcd-XXXXXX";
    if (::mkdtemp(dir) == nullptr)
      throw Error(std::string("cluster bench: mkdtemp: ") + std::strerror(errno));
    dir_ = dir;
    const std::string client = "http://127.0.0.1:" + std::to_string(free_loopback_port());
    const std::string peer = "http://127.0.0.1:" + std::to_string(free_loopback_port());
    SpawnOptions options;
    options.argv = {"etcd",
                    "--name",
                    "bench",
                    "--data-dir",
                    dir_ + "/data",
                    "--listen-client-urls",
                    client,
                    "--advertise-client-urls",
                    client,
                    "--listen-peer-urls",
                    peer,
                    "--initial-advertise-peer-urls",
                    peer,
                    "--initial-cluster",
                    "bench=" + peer,
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                    "--log-level",
                    "warn"};
    options.search_path = true;
    options.in = Stdio::null;
    options.out = Stdio::log_file;
    options.err = Stdio::log_file;
    options.log_file = dir_ + "/etcd.log";
    options.parent_death_signal = SIGKILL;
    try {
      process_ = std::make_unique<Subprocess>(options);
    } catch (const Error& e) {
      std::filesystem::remove_all(dir_);
      throw Error(std::string("cluster bench: cannot start etcd (Debian etcd-server), or pass "
                              "--etcd URL: ") +
                  e.what());
    }
    url_ = "etcd://" + client.substr(7);
  }
  ~BenchEtcd() {
    if (process_)
      process_->stop(std::chrono::seconds(2));
    if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
  }
  BenchEtcd(const BenchEtcd&) = delete;
  BenchEtcd& operator=(const BenchEtcd&) = delete;
  const std::string& url() const { return url_; }

 private:
  std::string url_, dir_;
  std::unique_ptr<Subprocess> process_;
};

/// A private PMD (`pmd --port 0` and `extra`), stopped with the object.
class ClusterBenchPmd {
 public:
  ClusterBenchPmd(const BenchCommon& common, const std::vector<std::string>& extra) {
    std::vector<std::string> argv{
        executable_of(common), "--log-level", "warn", "pmd", "--port", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    child_ = std::make_unique<BenchChild>(argv);
    const auto line = child_->read_line(kStartTimeout);
    const auto colon = line ? line->rfind(':') : std::string::npos;
    unsigned port = 0;
    if (colon != std::string::npos)
      std::from_chars(line->data() + colon + 1, line->data() + line->size(), port);
    if (port == 0 || port > 65535)
      throw Error("cluster bench: a pmd did not start: '" + line.value_or("<nothing>") + "'");
    port_ = static_cast<std::uint16_t>(port);
  }
  std::uint16_t port() const { return port_; }
  /// True once its list says the cluster view is current (within `timeout`).
  bool wait_current(std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    PmdConnection client(port_);
    while (Clock::now() < deadline) {
      if (client.request(pmd_request("list", "{}", 1)).find(R"("state":"current")") !=
          std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

 private:
  std::unique_ptr<BenchChild> child_;
  std::uint16_t port_ = 0;
};

std::string register_request(const std::string& alias, std::uint64_t id) {
  return pmd_request(
      "register",
      R"({"nodeId":")" + alias + R"(-id","alias":")" + alias + R"(","host":"127.0.0.1","port":1})",
      id);
}

double pipelined_resolves(std::uint16_t port, const std::string& alias, std::uint64_t count,
                          Clock::time_point deadline) {
  PmdConnection client(port);
  std::string frames;
  for (std::uint64_t i = 0; i < count; ++i)
    append_frame(frames, pmd_request("resolve", R"({"alias":")" + alias + R"("})", i));
  const auto t0 = Clock::now();
  client.exchange(frames, count, deadline);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

BenchReport run_cluster_bench(const ClusterBenchConfig& config, std::ostream& out,
                              std::ostream& err) {
  if (config.pmds < 2)
    throw Error("cluster bench: --pmds must be at least 2");
  BenchReport report;
  report.bench = "cluster";
  BenchEtcd etcd(config.etcd);
  report.params = {{"etcd", config.etcd.empty() ? "private, 1 member" : config.etcd},
                   {"pmds", std::to_string(config.pmds)},
                   {"joins", count_param(config.joins)},
                   {"nodes", count_param(config.nodes)},
                   {"resolves", count_param(config.resolves)},
                   {"reps", std::to_string(config.common.reps)}};
  begin(report, config.common, out);
  const std::string name = "bench-" + std::to_string(::getpid());
  std::vector<std::unique_ptr<ClusterBenchPmd>> pmds;
  for (unsigned i = 0; i < config.pmds; ++i) {
    pmds.push_back(std::make_unique<ClusterBenchPmd>(
        config.common, std::vector<std::string>{"--cluster", etcd.url(), "--cluster-name", name}));
  }
  ClusterBenchPmd plain(config.common, {});
  for (auto& pmd : pmds) {
    if (!pmd->wait_current(std::chrono::seconds(30)))
      throw Error("cluster bench: a pmd's cluster view is not current after 30 s (etcd?)");
  }
  // The local alias both kinds resolve.
  PmdConnection owner_clustered(pmds[0]->port()), owner_plain(plain.port());
  const std::string local = unique_alias("local", 0);
  owner_clustered.request(register_request(local, 1));
  owner_plain.request(register_request(local, 1));

  LatencySeries join_seen{"join on one pmd -> peer:join on another", {}};
  RateSeries clustered{"resolve local alias, clustered pmd", 0, {}, ""};
  RateSeries unclustered{"resolve local alias, unclustered pmd", 0, {}, ""};
  std::vector<double> complete_ms, gone_ms;
  for (unsigned rep = 0; rep < config.common.reps; ++rep) {
    ProgressBar progress(err, config.common.progress, "cluster rep " + std::to_string(rep + 1));
    const auto deadline = Clock::now() + config.common.timeout;
    {
      PmdConnection watcher(pmds[1]->port());
      watcher.request(pmd_request("watch", "{}", 1));
      PmdConnection owner(pmds[0]->port());
      std::vector<std::uint64_t> ns;
      for (std::uint64_t i = 0; i < config.joins; ++i) {
        const std::string alias = unique_alias("join" + std::to_string(i) + "-", rep);
        std::string frame;
        append_frame(frame, register_request(alias, i));
        const std::uint64_t t0 = monotonic_ns();
        owner.exchange(frame, 1, deadline);
        if (!watcher.wait_for("peer:join", "\"" + alias + "\"", deadline))
          throw Error("cluster bench: no peer:join for '" + alias + "' on the other pmd");
        ns.push_back(monotonic_ns() - t0);
        frame.clear();
        append_frame(frame, pmd_request("unregister", R"({"nodeId":")" + alias + R"(-id"})", i));
        owner.exchange(frame, 1, deadline);
        if (!watcher.wait_for("peer:leave", "\"" + alias + "\"", deadline))
          throw Error("cluster bench: no peer:leave for '" + alias + "' on the other pmd");
      }
      join_seen.reps.push_back(summarize_latencies(ns));
    }
    {
      // `nodes` registrations spread over the PMDs (pipelined, 4 connections each):
      // the time until every PMD has seen every join (its watcher's count).
      std::vector<std::unique_ptr<PmdConnection>> watchers;
      for (auto& pmd : pmds) {
        watchers.push_back(std::make_unique<PmdConnection>(pmd->port()));
        watchers.back()->request(pmd_request("watch", "{}", 1));
      }
      constexpr unsigned kConnections = 4;
      std::vector<std::unique_ptr<PmdConnection>> owners;
      std::vector<std::string> frames(config.pmds * kConnections);
      std::vector<std::uint64_t> counts(frames.size());
      for (std::uint64_t n = 0; n < config.nodes; ++n) {
        const std::size_t k = static_cast<std::size_t>(n % frames.size());
        append_frame(frames[k],
                     register_request(unique_alias("n" + std::to_string(n) + "-", rep), n));
        ++counts[k];
      }
      for (std::size_t k = 0; k < frames.size(); ++k)
        owners.push_back(std::make_unique<PmdConnection>(pmds[k % config.pmds]->port()));
      const auto t0 = Clock::now();
      for (std::size_t k = 0; k < frames.size(); ++k)
        counts[k] -= owners[k]->exchange(frames[k], 0, deadline);  // the rest: below
      for (std::size_t k = 0; k < frames.size(); ++k)
        owners[k]->exchange({}, counts[k], deadline);
      for (auto& watcher : watchers)
        watcher->exchange({}, config.nodes, deadline);
      complete_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      const auto t1 = Clock::now();
      owners.clear();  // the connections close: every key goes at once
      for (auto& watcher : watchers)
        watcher->exchange({}, config.nodes, deadline);
      gone_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t1).count());
    }
    // Alternated, in the same run: the local PMD path with and without the cluster.
    clustered.reps.push_back(
        {config.resolves, pipelined_resolves(pmds[0]->port(), local, config.resolves, deadline)});
    unclustered.reps.push_back(
        {config.resolves, pipelined_resolves(plain.port(), local, config.resolves, deadline)});
    progress.update(rep + 1, config.common.reps);
  }
  report.latencies = {join_seen};
  report.rates = {clustered, unclustered};
  report.figures.push_back({"join -> visible on another pmd p50 (median of reps)",
                            median_of(join_seen, &LatencySummary::p50) / 1e6, "ms"});
  report.figures.push_back({"join -> visible on another pmd p99 (median of reps)",
                            median_of(join_seen, &LatencySummary::p99) / 1e6, "ms"});
  report.figures.push_back({std::to_string(config.nodes) + " registrations over " +
                                std::to_string(config.pmds) + " pmds -> every view complete",
                            summarize(complete_ms).median, "ms"});
  report.figures.push_back(
      {"their connections closed -> gone from every view", summarize(gone_ms).median, "ms"});
  const double plain_rate = median_rate(unclustered);
  report.figures.push_back({"resolve rate clustered/unclustered",
                            plain_rate > 0 ? median_rate(clustered) / plain_rate : 0, "x"});
  emit(report, config.common, out);
  return report;
}

}  // namespace distflow
