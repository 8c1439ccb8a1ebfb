#include "sender.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "address.hpp"
#include "credentials.hpp"
#include "errors.hpp"
#include "framing.hpp"
#include "link.hpp"
#include "messages.hpp"
#include "ndjson.hpp"
#include "session.hpp"
#include "shared_fd.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;
constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 1u << 20;  // stdin read size
// Input is read while less than this waits for the socket: the reader is held
// back by a slow receiver (TCP back-pressure), never buffering without bound.
constexpr std::size_t kHighWater = 8u << 20;
// After the last write: how often the kernel is asked whether the receiver took
// more bytes, and how long the receiver may take to hang up once it has them all.
constexpr auto kHangUpPoll = std::chrono::milliseconds(100);
constexpr auto kHangUpWait = std::chrono::seconds(1);
// Ids are at most 128 bytes (PROTOCOL.md §2.1), so the envelope fits in this.
constexpr std::size_t kEnvelopeRoom = 4096;

/// The target's end of the link: on our connection it only ticks or refuses, so
/// reading reveals a refusal or the end; writes report progress.
class LinkEnd final : public SessionHandler {
 public:
  explicit LinkEnd(asio::io_context& io) : wake_(io) {
    wake_.expires_at(asio::steady_timer::time_point::max());
  }
  bool on_readable(Session& session) override {
    std::error_code ec;
    while (auto frame = session.decoder().next(ec)) {
      if (auto reason = refusal_reason(*frame)) {
        refused = *reason;
        wake_.cancel();
      }
    }
    if (ec)
      session.stop(describe_frame_error(ec, session.decoder()));
    return true;
  }
  void on_written(Session&, std::size_t, std::uint64_t frames) override {
    written = frames;
    wake_.cancel();
  }
  void on_closed(Session&, std::string_view reason) override {
    closed = std::string(reason);
    wake_.cancel();
  }
  /// Waits for the next progress or the end (or `deadline`).
  asio::awaitable<void> next(
      asio::steady_timer::time_point deadline = asio::steady_timer::time_point::max()) {
    wake_.expires_at(deadline);
    co_await wake_.async_wait(kAwait);
  }

  std::uint64_t written = 0;
  std::optional<std::string> closed;
  std::optional<std::string> refused;  // the receiver said why it will not serve us

 private:
  asio::steady_timer wake_;
};

/// One run of `distflow send`, on one thread: resolve the target through the PMD
/// (the one PMD client), dial it, encode every message straight into the
/// session's write queue, flush, and say exactly what failed if anything did.
class Sender {
 public:
  explicit Sender(const SendOptions& options)
      : options_(options),
        from_(options.from.empty() ? "send-" + std::to_string(::getpid()) : options.from),
        credentials_(options.security) {}

  /// Runs `body` (a coroutine over this sender) to completion; rethrows its error.
  template <class Body>
  void run(Body body) {
    std::exception_ptr failure;
    asio::co_spawn(io_, body(*this), [&](const std::exception_ptr& e) {
      failure = e;
      if (session_)
        session_->stop("done");  // done or failed: its loops and timers end, run() returns
    });
    io_.run();
    if (failure)
      std::rethrow_exception(failure);
  }

  asio::awaitable<void> connect() {
    // `alias@host[:port]`: that host's PMD knows it (issue 12).
    std::string error;
    auto address = parse_node_address(options_.target, error);
    if (!address)
      throw Error(error);
    PmdEndpoint endpoint = options_.pmd;
    if (address->host)
      endpoint = {*address->host, address->pmd_port.value_or(options_.pmd.port)};
    PmdProbe kind = PmdProbe::unreachable;
    auto pmd = co_await PmdConnection::open(io_, endpoint, options_.connect_timeout, error, kind,
                                            &credentials_, from_);
    if (!pmd)
      throw Error(error);
    NodeInfo node = co_await resolve(*pmd, address->name, endpoint);
    pmd->close();
    node.host = node_host_via(node.host, endpoint.host);
    target_ = fmt::format("'{}' ({}:{})", options_.target, node.host, node.port);
    max_frame_ = node.max_frame != 0 ? node.max_frame : kDefaultNodeFrameLimit;
    tcp::socket socket(io_);
    if (auto ec = co_await dial(socket, node.host, node.port, options_.connect_timeout)) {
      if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again)
        throw Error(fmt::format("cannot resolve host of {}: {}", target_, ec.message()));
      throw Error(fmt::format("cannot connect to {}: {}", target_, ec.message()));
    }
    SessionOptions session_options;
    session_options.max_queue_bytes = 2 * kHighWater + kDefaultNodeFrameLimit;
    // A receiver that takes nothing for this long (frozen, or gone without a
    // reset) fails the send instead of hanging it.
    session_options.stall_timeout = options_.write_timeout;
    // A node with a cookie or TLS takes only peers that prove themselves.
    TlsSide tls = credentials_.dial_tls(node.host);
    auto gate = credentials_.dial_gate(from_, node.node_id);
    if (credentials_.authenticated()) {
      session_options.hello_timeout = kHandshakeTimeout;
      // The receiver counts our silence (PROTOCOL.md §3.7): an idle stdin ticks.
      // Its silence is not counted here (its --tick is unknown to us): a receiver
      // gone for good is found by the write that it does not take.
      session_options.tick_interval = options_.tick_interval;
      session_options.tick_frame = std::string(kTickFrame);
      session_options.ticks_missed = 0;
    }
    end_ = std::make_shared<LinkEnd>(io_);
    session_ =
        std::make_shared<Session>(std::move(socket), end_, session_options, tls, std::move(gate));
    session_->start();
    encoder_.emplace(from_, node.node_id, std::string_view{});
  }

  /// Encodes `payload` `count` times into the write queue if there is room for all
  /// of them now (the common case: no coroutine per line); false, with nothing
  /// queued, when there is not.
  bool try_queue(std::string_view payload, std::int64_t timestamp, std::uint64_t count) {
    if (count != 1 || !fits(payload))
      return false;
    std::string* out = session_->reserve(encoder_->max_frame_bytes(payload.size()));
    if (out == nullptr)
      return false;
    encoder_->append(*out, payload, timestamp);
    last_frame_ = session_->commit();
    ++queued_;
    return true;
  }

  /// The frame for `payload` is within the receiver's --max-frame (it said so at
  /// registration; unknown: ours).
  bool fits(std::string_view payload) const {
    return encoder_->max_frame_bytes(payload.size()) - kFrameHeaderBytes <= max_frame_ ||
           frame_size(payload) <= max_frame_;
  }
  std::size_t frame_size(std::string_view payload) const {
    std::string probe;
    encoder_->append(probe, payload, 0);
    return probe.size() - kFrameHeaderBytes;
  }
  /// Why `payload` cannot go to this receiver.
  std::string too_large(std::string_view payload) const {
    return fmt::format("message of {} bytes exceeds the limit of {} ({} bytes, its --max-frame)",
                       frame_size(payload), target_, max_frame_);
  }

  /// Encodes `payload` `count` times into the write queue (waiting for room).
  asio::awaitable<void> queue(std::string_view payload, std::int64_t timestamp,
                              std::uint64_t count) {
    if (!fits(payload))
      throw Error(too_large(payload));
    for (std::uint64_t i = 0; i < count; ++i) {
      std::string* out = session_->reserve(encoder_->max_frame_bytes(payload.size()));
      while (out == nullptr) {
        co_await wait_below(kHighWater);
        out = session_->reserve(encoder_->max_frame_bytes(payload.size()));
      }
      encoder_->append(*out, payload, timestamp);
      last_frame_ = session_->commit();
      ++queued_;
    }
  }

  /// Lets the writer go, and waits while the backlog is above the high-water mark.
  asio::awaitable<void> flush_some() {
    session_->flush();
    if (session_->queued_bytes() > kHighWater)
      co_await wait_below(kHighWater / 2);
  }

  /// Writes everything, half-closes, and fails unless the receiver's host
  /// acknowledged every byte.
  asio::awaitable<void> finish() {
    session_->flush();
    while (!end_->closed && !end_->refused && end_->written < last_frame_)
      co_await end_->next();
    if (end_->refused || end_->written < last_frame_)
      fail();
    // Everything is with our kernel, not yet with the receiver's. Closing now
    // would leave it to an orphaned socket, and the reset that the receiver's
    // next tick draws from that socket drops what it still holds. So wait until
    // the receiver's host has acknowledged every byte (a node reads those even
    // after a reset), for as long as it keeps taking them; then a short while
    // for its hang-up, so that a refusal in words is not missed.
    session_->end_writes();
    using Clock = asio::steady_timer::clock_type;
    const auto timeout = options_.write_timeout;
    std::size_t unacked = unacknowledged_bytes(SIZE_MAX);
    auto progress = Clock::now();
    while (!end_->closed && !end_->refused) {
      const auto now = Clock::now();
      if (unacked == 0 && now - progress >= kHangUpWait)
        break;
      if (unacked > 0 && timeout.count() > 0 && now - progress >= timeout)
        throw Error(
            undelivered(unacked, fmt::format("it took no bytes for {} ms", timeout.count())));
      co_await end_->next(now + kHangUpPoll);
      if (const std::size_t left = unacknowledged_bytes(unacked); left < unacked) {
        unacked = left;
        progress = Clock::now();
      }
    }
    if (end_->refused)
      fail();
    // A hang-up comes after the receiver read everything, so after its host
    // acknowledged everything; anything else may have lost the last bytes.
    if (end_->closed) {
      unacked = unacknowledged_bytes(unacked);
      if (*end_->closed != kClosedByPeer || unacked > 0)
        throw Error(undelivered(unacked, *end_->closed));
    }
  }

  std::uint64_t queued() const { return queued_; }
  asio::io_context& io() { return io_; }

 private:
  asio::awaitable<NodeInfo> resolve(PmdConnection& pmd, const std::string& name,
                                    const PmdEndpoint& endpoint) {
    std::string payload = "{\"alias\":";
    append_json_string(payload, name);
    payload += '}';
    std::optional<PmdReply> answer;
    std::string error;
    bool done = false;
    asio::steady_timer wake(io_, asio::steady_timer::time_point::max());
    pmd.request("resolve", payload, [&](const PmdReply* reply, const std::string& why) {
      if (reply)
        answer = *reply;
      error = why;
      done = true;
      wake.cancel();
    });
    while (!done)
      co_await wake.async_wait(kAwait);
    if (!answer)
      throw Error(error);
    if (!answer->node) {
      if (answer->error == "Node not found") {
        throw Error(fmt::format("unknown target '{}': no node with that alias or id on pmd {}",
                                options_.target, endpoint.to_string()));
      }
      throw Error(fmt::format("cannot resolve '{}' on pmd {}: {}", options_.target,
                              endpoint.to_string(), answer->error));
    }
    co_return *answer->node;
  }

  asio::awaitable<void> wait_below(std::size_t bytes) {
    while (session_->queued_bytes() > bytes) {
      if (end_->closed)
        fail();
      co_await end_->next();
    }
  }

  /// Bytes the receiver's host has not acknowledged; `known` once the session
  /// is closed and cannot say.
  std::size_t unacknowledged_bytes(std::size_t known) {
    return session_->unacknowledged_bytes().value_or(known);
  }

  /// Why a send that wrote every message failed: `why`, and where the bytes are.
  std::string undelivered(std::size_t unacked, std::string_view why) const {
    return fmt::format(
        "connection to {} lost after all {} messages were written: {}; {}", target_, queued_, why,
        unacked == SIZE_MAX ? std::string("how many reached its host is unknown")
        : unacked > 0       ? fmt::format("the last {} bytes did not reach its host", unacked)
                            : std::string("all reached its host, the last may be unread"));
  }

  /// Our messages among the frames written: ticks go out only while nothing
  /// else is queued (one may still be unwritten: then this counts one short).
  std::uint64_t messages_written() const {
    const std::uint64_t ticks = session_->ticks_sent();
    return std::min(queued_, end_->written > ticks ? end_->written - ticks : 0);
  }

  [[noreturn]] void fail() {
    if (end_->refused) {
      throw Error(fmt::format("{} refused the connection: {}; none of {} messages delivered",
                              target_, *end_->refused, queued_));
    }
    throw Error(fmt::format("connection to {} lost after {} of {} messages: {}", target_,
                            messages_written(), queued_, end_->closed.value_or("closed")));
  }

  asio::io_context io_{1};
  const SendOptions& options_;
  std::string from_;
  Credentials credentials_;
  std::string target_;
  std::shared_ptr<LinkEnd> end_;
  std::shared_ptr<Session> session_;
  std::optional<MessageEncoder> encoder_;
  std::uint64_t queued_ = 0;      // messages
  std::uint64_t last_frame_ = 0;  // the session's number for our last message's frame
  std::size_t max_frame_ = kDefaultNodeFrameLimit;
};

}  // namespace

std::size_t max_send_payload_bytes() {
  return kDefaultNodeFrameLimit - kEnvelopeRoom;
}

SendResult send_message(const SendOptions& options, std::string_view body) {
  JsonValidator validator;
  std::string why;
  if (validator.validate(body, &why))
    throw Error(fmt::format("invalid JSON body: {}", why));
  if (body.size() > max_send_payload_bytes()) {
    throw Error(fmt::format("body of {} bytes exceeds the limit of {} bytes", body.size(),
                            max_send_payload_bytes()));
  }
  SendResult result;
  Sender sender(options);
  sender.run([&](Sender& s) -> asio::awaitable<void> {
    co_await s.connect();
    co_await s.queue(body, now_ms(), options.count);
    co_await s.finish();
    result.sent = s.queued();
  });
  return result;
}

SendResult send_stream(const SendOptions& options, int input_fd, const SendDiagnostic& diagnostic) {
  SendResult result;
  Sender sender(options);
  sender.run([&](Sender& s) -> asio::awaitable<void> {
    co_await s.connect();
    asio::posix::stream_descriptor input(s.io(), private_nonblocking_fd(input_fd, false));
    JsonValidator validator;
    NdjsonReader reader(std::min(options.max_line_bytes, max_send_payload_bytes()));
    std::string why;
    auto handle = [&](const NdjsonLine& line) -> bool {
      if (line.too_long) {
        ++result.invalid;
        diagnostic(fmt::format("line {}: longer than the limit of {} bytes", line.number,
                               reader.max_line_bytes()));
        return false;
      }
      if (validator.validate(line.text, &why)) {
        ++result.invalid;
        diagnostic(fmt::format("line {}: invalid JSON: {}", line.number, why));
        return false;
      }
      return true;
    };
    for (;;) {
      auto room = reader.prepare(kReadChunk);
      auto [ec, n] = co_await input.async_read_some(asio::buffer(room.data(), room.size()), kAwait);
      if (ec && ec != asio::error::eof)
        throw Error(fmt::format("cannot read input: {}", ec.message()));
      if (n == 0)
        break;
      reader.commit(n);
      // One clock read per chunk: lines read together share a timestamp.
      const std::int64_t timestamp = now_ms();
      while (auto line = reader.next()) {
        if (!handle(*line) || s.try_queue(line->text, timestamp, options.count))
          continue;
        if (!s.fits(line->text)) {
          ++result.invalid;
          diagnostic(fmt::format("line {}: {}", line->number, s.too_large(line->text)));
          continue;
        }
        co_await s.queue(line->text, timestamp, options.count);
      }
      // Whatever one read brought goes out now: a slow producer is never held back.
      co_await s.flush_some();
    }
    if (auto line = reader.finish(); line && handle(*line)) {
      if (s.fits(line->text)) {
        co_await s.queue(line->text, now_ms(), options.count);
      } else {
        ++result.invalid;
        diagnostic(fmt::format("line {}: {}", line->number, s.too_large(line->text)));
      }
    }
    co_await s.finish();
    result.sent = s.queued();
    spdlog::debug("send finished sent={} invalid={} lines={}", result.sent, result.invalid,
                  reader.lines_seen());
  });
  return result;
}

}  // namespace distflow
