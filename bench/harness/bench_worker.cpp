#include "bench_worker.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <ostream>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_runner.hpp"
#include "bench_stats.hpp"
#include "cookie.hpp"
#include "errors.hpp"
#include "framing.hpp"
#include "messages.hpp"
#include "node_runtime.hpp"

namespace distflow {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kWarmupRoundTrips = 1000;

std::unique_ptr<NodeRuntime> start_node(const BenchWorkerConfig& config, std::size_t mailbox,
                                        OverflowPolicy policy) {
  NodeOptions options;
  options.alias = config.alias;
  options.pmd.host = config.pmd_host;
  options.pmd.port = config.pmd_port;
  options.listen_host = config.listen_host;
  if (!config.cookie_file.empty())
    options.security.cookie = load_cookie_file(config.cookie_file);
  options.security.tls = config.tls;
  options.security.insecure = config.insecure;
  options.auto_start_pmd = config.auto_pmd;
  options.mailbox_size = mailbox;
  options.overflow = policy;
  return NodeRuntime::start(std::move(options));
}

// The quick-handler opt-in (on the I/O thread, in its read loop) or the regular
// dispatcher thread.
void set_handler(NodeRuntime& node, bool inline_handler, MessageHandler handler) {
  if (inline_handler) {
    node.on_message_inline(std::move(handler));
  } else {
    node.on_message(std::move(handler));
  }
}

// ---- rx ---------------------------------------------------------------------------

struct SenderTrack {
  std::uint64_t received = 0;
  std::uint64_t next = 0;  // the sequence number expected next
  std::uint64_t reordered = 0;
};

// Counts messages per sender. `inline_handler`: the count runs on the I/O thread
// (on_message_inline), else on the dispatcher thread (on_message).
int run_rx(const BenchWorkerConfig& config, std::ostream& out, bool inline_handler) {
  // `block`: backpressure through TCP instead of drops, so loss means a real fault.
  auto node = start_node(config, 65536, OverflowPolicy::block);
  std::vector<SenderTrack> senders;
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> last_ns{0};
  std::uint64_t first_ns = 0, foreign = 0;
  // The clock is read at the first message, at the last one expected and every 4096th
  // in between (the end when some never come): as the raw receiver reads it once per
  // 256 KiB, so neither side's figure pays a clock read per message.
  std::uint64_t counted = 0;
  auto count = [&](const Envelope& message) {
    ++counted;
    if (first_ns == 0) {
      first_ns = monotonic_ns();
      last_ns.store(first_ns, std::memory_order_relaxed);
    } else if (counted == config.msgs || (counted & 4095) == 0) {
      last_ns.store(monotonic_ns(), std::memory_order_relaxed);
    }
    unsigned id = 0;
    std::uint64_t seq = 0;
    if (!parse_bench_payload(message.payload(), id, seq) || id > 4096) {
      ++foreign;
    } else {
      if (id >= senders.size())
        senders.resize(id + 1);
      SenderTrack& track = senders[id];
      ++track.received;
      if (seq < track.next) {
        ++track.reordered;
      } else {
        track.next = seq + 1;
      }
    }
    received.store(counted, std::memory_order_release);  // one writer: no read-modify-write
  };
  set_handler(*node, inline_handler, std::move(count));
  out << "ready " << node->alias() << std::endl;

  // Ends when everything arrived, after 2 s without a message, or at the deadline.
  const auto deadline = Clock::now() + config.timeout;
  std::uint64_t seen = 0;
  auto last_change = Clock::now();
  while (Clock::now() < deadline) {
    const std::uint64_t now_received = received.load(std::memory_order_acquire);
    if (now_received >= config.msgs)
      break;
    if (now_received != seen) {
      seen = now_received;
      last_change = Clock::now();
    } else if (seen > 0 && Clock::now() - last_change > std::chrono::seconds(2)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const NodeStats stats = node->stats();
  node->shutdown();  // the dispatcher has stopped: its counters are ours to read
  std::uint64_t reordered = 0, in_sequence = 0;
  for (const SenderTrack& track : senders) {
    reordered += track.reordered;
    in_sequence += track.received;
  }
  const std::uint64_t total = received.load();
  Json result{{"received", total},
              {"expected", config.msgs},
              {"lost", config.msgs > in_sequence ? config.msgs - in_sequence : 0},
              {"reordered", reordered},
              {"foreign", foreign},
              {"first_ns", first_ns},
              {"last_ns", last_ns.load()},
              {"mailbox_dropped", stats.mailbox.dropped},
              {"bad_frames", stats.bad_frames}};
  out << result.dump() << std::endl;
  return 0;
}

// ---- tx ---------------------------------------------------------------------------

int run_tx(const BenchWorkerConfig& config, std::ostream& out) {
  auto node = start_node(config, 1000, OverflowPolicy::drop_newest);
  std::vector<std::string> targets = config.targets;
  if (targets.empty())
    targets.push_back(config.target);
  const std::uint64_t fan = targets.size();
  std::string payload;
  // Resolve and connect before the clock starts: the first send_sync does both.
  // Message i goes to target i % fan with sequence i / fan: each receiver sees its
  // own run 0, 1, 2... and counts loss and reordering as with one sender.
  make_bench_payload(payload, config.id, 0, config.size);
  for (std::uint64_t t = 0; t < fan && t < config.msgs; ++t)
    node->send_sync(targets[t], payload);
  out << "ready " << node->alias() << std::endl;
  const std::uint64_t start = monotonic_ns();
  if (fan == 1) {
    for (std::uint64_t seq = 1; seq < config.msgs; ++seq) {
      make_bench_payload(payload, config.id, seq, config.size);
      node->send(targets[0], payload);
    }
  } else {
    for (std::uint64_t i = fan; i < config.msgs; ++i) {
      make_bench_payload(payload, config.id, i / fan, config.size);
      node->send(targets[i % fan], payload);
    }
  }
  const std::uint64_t queued = monotonic_ns();
  node->flush(std::chrono::duration_cast<std::chrono::milliseconds>(config.timeout));
  const std::uint64_t end = monotonic_ns();
  const NodeStats stats = node->stats();
  node->shutdown();
  Json result{{"sent", stats.sent},
              {"failures", stats.send_failures},
              {"start_ns", start},
              {"queued_ns", queued},
              {"end_ns", end}};
  out << result.dump() << std::endl;
  return 0;
}

// ---- pong, ping, idle -------------------------------------------------------------

// Echoes every message to its sender. `inline_handler`: the quick-handler opt-in, the
// echo runs on the I/O thread in its read loop; else the regular dispatcher thread.
int run_pong(const BenchWorkerConfig& config, std::ostream& out, bool inline_handler) {
  auto node = start_node(config, 1000, OverflowPolicy::block);
  NodeRuntime* self = node.get();
  auto echo = [self](const Envelope& message) { self->send(message.from(), message.payload()); };
  set_handler(*node, inline_handler, std::move(echo));
  out << "ready " << node->alias() << std::endl;
  // Until the bench stops us (SIGTERM) or the deadline.
  std::this_thread::sleep_for(config.timeout);
  node->shutdown();
  return 0;
}

void print_latencies(std::ostream& out, std::vector<std::uint64_t>& samples) {
  const LatencySummary s = summarize_latencies(samples);
  Json result{{"samples", s.samples}, {"min_ns", s.min},   {"p50_ns", s.p50}, {"p90_ns", s.p90},
              {"p99_ns", s.p99},      {"p999_ns", s.p999}, {"max_ns", s.max}, {"avg_ns", s.avg}};
  out << result.dump() << std::endl;
}

// Starts the ping node and makes one round trip (connection and route warm), then says
// ready. `payload` gets the bench payload of --size bytes.
std::unique_ptr<NodeRuntime> start_ping_node(const BenchWorkerConfig& config, std::ostream& out,
                                             std::string& payload) {
  auto node = start_node(config, 1000, OverflowPolicy::block);
  make_bench_payload(payload, 0, 0, config.size);
  node->send_sync(config.target, payload);
  if (!node->receive(std::chrono::seconds(5)))
    throw Error("ping: no answer from the pong");
  out << "ready " << node->alias() << std::endl;
  return node;
}

int run_ping(const BenchWorkerConfig& config, std::ostream& out) {
  std::string payload;
  auto node = start_ping_node(config, out, payload);
  // Round trips driven by the quick-handler opt-in (NodeRuntime::on_message_inline):
  // each reply is timed and the next ping sent on the I/O thread, from its read
  // loop; this thread only waits for the end.
  struct Run {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    std::atomic<std::uint64_t> round_trips{0};
    std::uint64_t t0 = 0;
    std::vector<std::uint64_t> samples;
  } run;
  run.samples.reserve(config.msgs);
  const std::uint64_t total = kWarmupRoundTrips + config.msgs;
  const auto deadline = Clock::now() + config.timeout;
  NodeRuntime* self = node.get();
  node->on_message_inline([&run, &config, &payload, self, total, deadline](const Envelope&) {
    const std::uint64_t t1 = monotonic_ns();
    const std::uint64_t i = run.round_trips.load(std::memory_order_relaxed);
    if (i >= total)
      return;
    if (i >= kWarmupRoundTrips)
      run.samples.push_back(t1 - run.t0);
    run.round_trips.store(i + 1, std::memory_order_relaxed);
    if (i + 1 == total || ((i & 1023) == 0 && Clock::now() > deadline)) {
      std::lock_guard lock(run.mutex);
      run.done = true;
      run.finished.notify_all();
      return;
    }
    run.t0 = monotonic_ns();
    self->send(config.target, payload);
  });
  std::uint64_t stuck_at = 0;
  bool stuck = false;
  {
    std::unique_lock lock(run.mutex);
    run.t0 = monotonic_ns();
    node->send(config.target, payload);
    std::uint64_t seen = 0;
    while (!run.done && !stuck) {
      if (!run.finished.wait_for(lock, std::chrono::seconds(5), [&] { return run.done; })) {
        stuck_at = run.round_trips.load(std::memory_order_relaxed);
        stuck = stuck_at == seen;
        seen = stuck_at;
      }
    }
  }
  node->shutdown();  // before `run` goes: the handler uses it
  if (stuck)
    throw Error("ping: round trip " + std::to_string(stuck_at) + " timed out after 5 s");
  print_latencies(out, run.samples);
  return 0;
}

// The regular path: the pings from this thread, the replies through receive().
int run_ping_regular(const BenchWorkerConfig& config, std::ostream& out) {
  std::string payload;
  auto node = start_ping_node(config, out, payload);
  std::vector<std::uint64_t> samples;
  samples.reserve(config.msgs);
  const auto deadline = Clock::now() + config.timeout;
  for (std::uint64_t i = 0; i < kWarmupRoundTrips + config.msgs; ++i) {
    const std::uint64_t t0 = monotonic_ns();
    node->send(config.target, payload);
    if (!node->receive(std::chrono::seconds(5)))
      throw Error("ping: round trip " + std::to_string(i) + " timed out after 5 s");
    const std::uint64_t t1 = monotonic_ns();
    if (i >= kWarmupRoundTrips)
      samples.push_back(t1 - t0);
    if ((i & 1023) == 0 && Clock::now() > deadline)
      break;
  }
  node->shutdown();
  print_latencies(out, samples);
  return 0;
}

// ---- call-server, call-client ----------------------------------------------------------

int run_call_server(const BenchWorkerConfig& config, std::ostream& out) {
  auto node = start_node(config, 1000, OverflowPolicy::block);
  NodeRuntime* self = node.get();
  node->on_message_inline([self](const Envelope& message) {
    if (message.is_request())
      self->reply(message, message.payload());
  });
  out << "ready " << node->alias() << std::endl;
  std::this_thread::sleep_for(config.timeout);
  node->shutdown();
  return 0;
}

// Calls chained on the I/O thread: each reply's callback starts the next call, so
// `inflight` calls wait at any time until `total` are answered.
class CallChain {
 public:
  CallChain(NodeRuntime& node, const BenchWorkerConfig& config, const std::string& payload,
            std::uint64_t total, bool timed)
      : node_(node), config_(config), payload_(payload), total_(total), timed_(timed) {
    if (timed_)
      samples_.reserve(total);
  }

  /// Runs to the end; returns the seconds taken. Throws on a failed call or a stall.
  double run(unsigned inflight) {
    const auto t0 = Clock::now();
    for (unsigned i = 0; i < inflight; ++i)
      start();
    std::unique_lock lock(mutex_);
    std::uint64_t seen = 0;
    while (!done_ && error_.empty()) {
      if (!finished_.wait_for(lock, std::chrono::seconds(5), [&] { return done_; })) {
        const std::uint64_t now = answered_.load();
        if (now == seen) {
          error_ = "no reply for 5 s after " + std::to_string(now) + " calls";
          break;
        }
        seen = now;
      }
    }
    if (!error_.empty()) {
      const std::string error = error_;
      lock.unlock();
      node_.shutdown();  // ends the calls still in flight: none outlives this chain
      throw Error("call-client: " + error);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

  std::vector<std::uint64_t>& samples() { return samples_; }

 private:
  void start() {
    if (started_.fetch_add(1, std::memory_order_relaxed) >= total_)
      return;
    const std::uint64_t t0 = timed_ ? monotonic_ns() : 0;
    node_.call(config_.target, payload_, std::chrono::seconds(10),
               [this, t0](std::error_code ec, const Envelope&, const std::string& why) {
                 if (timed_)
                   samples_.push_back(monotonic_ns() - t0);
                 if (ec) {
                   std::lock_guard lock(mutex_);
                   error_ = why;
                   finished_.notify_all();
                   return;
                 }
                 const std::uint64_t answered = answered_.fetch_add(1) + 1;
                 if (answered == total_) {
                   std::lock_guard lock(mutex_);
                   done_ = true;
                   finished_.notify_all();
                 } else {
                   start();
                 }
               });
  }

  NodeRuntime& node_;
  const BenchWorkerConfig& config_;
  const std::string& payload_;
  const std::uint64_t total_;
  const bool timed_;
  std::atomic<std::uint64_t> started_{0};
  std::atomic<std::uint64_t> answered_{0};
  std::vector<std::uint64_t> samples_;  // the I/O thread's until done
  std::mutex mutex_;
  std::condition_variable finished_;
  bool done_ = false;
  std::string error_;
};

int run_call_client(const BenchWorkerConfig& config, std::ostream& out) {
  auto node = start_node(config, 1000, OverflowPolicy::block);
  std::string payload;
  make_bench_payload(payload, 0, 0, config.size);
  // Warm: the links both ways and the route.
  for (std::uint64_t i = 0; i < kWarmupRoundTrips; ++i)
    node->call(config.target, payload, std::chrono::seconds(5)).get();
  out << "ready " << node->alias() << std::endl;

  auto summary = [](std::vector<std::uint64_t>& samples) {
    const LatencySummary s = summarize_latencies(samples);
    return Json{{"samples", s.samples}, {"min_ns", s.min},   {"p50_ns", s.p50}, {"p90_ns", s.p90},
                {"p99_ns", s.p99},      {"p999_ns", s.p999}, {"max_ns", s.max}, {"avg_ns", s.avg}};
  };
  Json result;
  {
    CallChain chain(*node, config, payload, config.msgs, true);
    chain.run(1);
    result["callback"] = summary(chain.samples());
  }
  {
    // The future: the answer crosses to this thread.
    std::vector<std::uint64_t> samples;
    samples.reserve(config.msgs);
    for (std::uint64_t i = 0; i < config.msgs; ++i) {
      const std::uint64_t t0 = monotonic_ns();
      node->call(config.target, payload, std::chrono::seconds(5)).get();
      samples.push_back(monotonic_ns() - t0);
    }
    result["future"] = summary(samples);
  }
  Json rates = Json::object();
  for (unsigned inflight : config.inflight) {
    const std::uint64_t total = std::max<std::uint64_t>(config.msgs * 4, inflight * 4ull);
    CallChain chain(*node, config, payload, total, false);
    const double seconds = chain.run(inflight);
    rates[std::to_string(inflight)] = Json{{"calls", total}, {"seconds", seconds}};
  }
  result["rates"] = rates;
  node->shutdown();
  out << result.dump() << std::endl;
  return 0;
}

int run_idle(const BenchWorkerConfig& config, std::ostream& out) {
  auto node = start_node(config, 1000, OverflowPolicy::drop_newest);
  out << "ready " << node->alias() << std::endl;
  std::this_thread::sleep_for(config.timeout);
  node->shutdown();
  return 0;
}

// ---- raw TCP baseline ---------------------------------------------------------------

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void fail(const std::string& what) {
  throw Error(what + ": " + std::strerror(errno));
}

void write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      fail("raw write");
    data += w;
    n -= static_cast<std::size_t>(w);
  }
}

/// False on a clean EOF before the first byte.
bool read_exact(int fd, char* data, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, data + got, n - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0 && got == 0)
      return false;
    if (r <= 0)
      fail("raw read");
    got += static_cast<std::size_t>(r);
  }
  return true;
}

/// One frame in, body into `body`; false on EOF.
bool read_frame(int fd, std::string& body) {
  unsigned char header[kFrameHeaderBytes];
  if (!read_exact(fd, reinterpret_cast<char*>(header), sizeof header))
    return false;
  const std::uint32_t length = (std::uint32_t{header[0]} << 24) | (std::uint32_t{header[1]} << 16) |
                               (std::uint32_t{header[2]} << 8) | std::uint32_t{header[3]};
  if (length == 0 || length > kDefaultNodeFrameLimit)
    throw Error("raw frame length out of range");
  body.resize(length);
  return read_exact(fd, body.data(), length);
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// The next connection accepted on `listener`.
int accept_loopback(Fd& listener) {
  const int conn = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (conn < 0)
    fail("raw accept");
  return conn;
}

/// Listens on 127.0.0.1:0, prints `ready PORT`, returns the first accepted connection.
int listen_loopback(std::ostream& out, Fd& listener) {
  if (listener.get() < 0)
    fail("raw socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener.get(), 2) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    fail("raw listen on 127.0.0.1:0");
  }
  out << "ready " << ntohs(addr.sin_port) << std::endl;
  return accept_loopback(listener);
}

/// A TCP_NODELAY connection to 127.0.0.1:`port`.
int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    fail("raw socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    fail("raw connect to 127.0.0.1:" + std::to_string(port));
  }
  set_nodelay(fd);
  return fd;
}

int run_raw_pong(const BenchWorkerConfig& config, std::ostream& out) {
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Fd conn(listen_loopback(out, listener));
  set_nodelay(conn.get());
  // Split: the ping's second connection carries the echo; each one moves bytes one way.
  Fd back(config.split ? accept_loopback(listener) : -1);
  if (config.split)
    set_nodelay(back.get());
  const int reply = config.split ? back.get() : conn.get();
  std::string body, frame;
  while (read_frame(conn.get(), body)) {
    frame.clear();
    append_frame(frame, body);
    write_all(reply, frame.data(), frame.size());
  }
  return 0;
}

int run_raw_ping(const BenchWorkerConfig& config, std::ostream& out) {
  Fd conn(connect_loopback(config.port));
  Fd back(config.split ? connect_loopback(config.port) : -1);  // accepted second
  const int echo = config.split ? back.get() : conn.get();
  // The same bytes a node would send: a full envelope around the same payload.
  std::string payload, frame, body;
  make_bench_payload(payload, 0, 0, config.size);
  MessageEncoder("ping-raw", "pong-raw", "").append(frame, payload, now_ms());
  out << "ready" << std::endl;
  std::vector<std::uint64_t> samples;
  samples.reserve(config.msgs);
  const auto deadline = Clock::now() + config.timeout;
  for (std::uint64_t i = 0; i < kWarmupRoundTrips + config.msgs; ++i) {
    const std::uint64_t t0 = monotonic_ns();
    write_all(conn.get(), frame.data(), frame.size());
    if (!read_frame(echo, body))
      throw Error("raw ping: the echo closed the connection");
    const std::uint64_t t1 = monotonic_ns();
    if (i >= kWarmupRoundTrips)
      samples.push_back(t1 - t0);
    if ((i & 1023) == 0 && Clock::now() > deadline)
      break;
  }
  print_latencies(out, samples);
  return 0;
}

// ---- raw throughput: the limit of the framed bytes over loopback TCP -------------------

// Counts frames by their length prefixes, nothing else: the receiving half of the limit.
int run_raw_rx(const BenchWorkerConfig& config, std::ostream& out) {
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Fd conn(listen_loopback(out, listener));
  set_nodelay(conn.get());  // as a node's sockets
  // Ends when every frame arrived, at EOF, after 2 s without a byte, or at the deadline.
  const timeval idle{2, 0};
  ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
  constexpr std::size_t kReadBytes = 256 * 1024;
  std::vector<char> buf(kReadBytes);
  std::uint64_t frames = 0, bytes = 0, first_ns = 0, last_ns = 0;
  std::uint64_t skip = 0;  // body bytes of the current frame still to come
  unsigned char header[kFrameHeaderBytes];
  std::size_t header_have = 0;  // bytes of the next length prefix already read
  const auto deadline = Clock::now() + config.timeout;
  while (frames < config.msgs) {
    const ssize_t n = ::read(conn.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;  // EOF, or 2 s of silence (EAGAIN)
    const std::uint64_t now = monotonic_ns();
    if (first_ns == 0)
      first_ns = now;
    bytes += static_cast<std::uint64_t>(n);
    const char* p = buf.data();
    const char* end = p + n;
    const std::uint64_t before = frames;
    while (p < end) {
      if (skip > 0) {
        const auto take = std::min<std::uint64_t>(skip, static_cast<std::uint64_t>(end - p));
        p += take;
        skip -= take;
        if (skip == 0)
          ++frames;
        continue;
      }
      header[header_have++] = static_cast<unsigned char>(*p++);
      if (header_have == kFrameHeaderBytes) {
        header_have = 0;
        skip = (std::uint64_t{header[0]} << 24) | (std::uint64_t{header[1]} << 16) |
               (std::uint64_t{header[2]} << 8) | std::uint64_t{header[3]};
        if (skip == 0 || skip > kDefaultNodeFrameLimit)
          throw Error("raw rx: frame length out of range");
      }
    }
    if (frames != before)
      last_ns = now;
    if (Clock::now() > deadline)  // one clock read per 256 KiB
      break;
  }
  Json result{{"received", frames},
              {"expected", config.msgs},
              {"lost", config.msgs > frames ? config.msgs - frames : 0},
              {"bytes", bytes},
              {"first_ns", first_ns},
              {"last_ns", last_ns}};
  out << result.dump() << std::endl;
  return 0;
}

// Writes `msgs` frames from a 1 MiB block encoded once: the sending half of the limit.
int run_raw_tx(const BenchWorkerConfig& config, std::ostream& out) {
  Fd conn(connect_loopback(config.port));
  // The envelopes a node would send: node ids as generate_node_id() makes them
  // (alias-PID-xxxxxx), the sender's alias, the bench payload with its sequence.
  const std::string suffix = "-" + std::to_string(::getpid()) + "-a1b2c3";
  const MessageEncoder encoder(config.alias + suffix, config.target + suffix, config.alias);
  constexpr std::size_t kWriteBytes = 1 << 20;
  const std::int64_t timestamp = now_ms();
  std::string block, payload;
  std::vector<std::size_t> ends;  // ends[i]: the block's bytes up to and including frame i
  block.reserve(kWriteBytes + 4096);
  for (std::uint64_t seq = 0; ends.empty() || block.size() < kWriteBytes - 4096; ++seq) {
    make_bench_payload(payload, config.id, seq, config.size);
    encoder.append(block, payload, timestamp);
    ends.push_back(block.size());
  }
  const std::uint64_t per_block = ends.size();
  out << "ready" << std::endl;
  const std::uint64_t start = monotonic_ns();
  std::uint64_t left = config.msgs;
  for (; left >= per_block; left -= per_block)
    write_all(conn.get(), block.data(), block.size());
  if (left > 0)
    write_all(conn.get(), block.data(), ends[left - 1]);
  const std::uint64_t end = monotonic_ns();
  Json result{{"sent", config.msgs},
              {"failures", 0},
              {"frame_bytes", block.size() / per_block},
              {"start_ns", start},
              {"end_ns", end}};
  out << result.dump() << std::endl;
  return 0;
}

}  // namespace

std::uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

int run_bench_worker(const BenchWorkerConfig& config, std::ostream& out) {
  if (config.role == "rx")
    return run_rx(config, out, false);
  if (config.role == "rx-inline")
    return run_rx(config, out, true);
  if (config.role == "tx")
    return run_tx(config, out);
  if (config.role == "pong")
    return run_pong(config, out, true);
  if (config.role == "ping")
    return run_ping(config, out);
  if (config.role == "pong-regular")
    return run_pong(config, out, false);
  if (config.role == "ping-regular")
    return run_ping_regular(config, out);
  if (config.role == "idle")
    return run_idle(config, out);
  if (config.role == "call-server")
    return run_call_server(config, out);
  if (config.role == "call-client")
    return run_call_client(config, out);
  if (config.role == "raw-pong")
    return run_raw_pong(config, out);
  if (config.role == "raw-ping")
    return run_raw_ping(config, out);
  if (config.role == "raw-rx")
    return run_raw_rx(config, out);
  if (config.role == "raw-tx")
    return run_raw_tx(config, out);
  throw Error(
      "unknown bench worker role '" + config.role +
      "': expected rx, rx-inline, tx, pong, ping, pong-regular, ping-regular, idle, raw-pong, "
      "raw-ping, raw-rx or raw-tx");
}

}  // namespace distflow
