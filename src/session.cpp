#include "session.hpp"

#include <algorithm>
#include <cerrno>
#include <exception>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "tls.hpp"

namespace distflow {

using asio::ip::tcp;
namespace {

constexpr auto kAwait = asio::experimental::as_tuple(asio::use_awaitable);
// After close_after_flush(): how long the queue may take to go out and the peer's
// unread bytes to be drained (so that our last reply is not lost to a reset).
constexpr auto kLinger = std::chrono::milliseconds(1000);
constexpr std::size_t kMaxDrainBytes = 1u << 20;
// write_now() sends at most this much itself; a larger backlog goes to the writer.
constexpr std::size_t kDirectWriteMax = 64u << 10;
// Spare outbox chunks kept while the writer is idle (a burst is over).
constexpr std::size_t kKeepIdleBuffer = 4u << 20;

std::string describe_read_end(const std::error_code& ec, const FrameDecoder& decoder) {
  // Over TLS a peer that half-closes the TCP stream (no close_notify) ends it the
  // same way; frames delimit themselves, and a cut inside one is still reported.
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
    if (auto partial = decoder.finish())
      return describe_frame_error(partial, decoder);
    return std::string(kClosedByPeer);
  }
  if (ec == asio::error::connection_reset)
    return "reset by the peer";
  return ec.message();
}

}  // namespace

bool is_loopback(const asio::ip::address& address) {
  if (address.is_loopback())
    return true;
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  return false;
}

void spawn_logged(asio::io_context& io, asio::awaitable<void> task, const char* name) {
  spawn_logged(io.get_executor(), std::move(task), name);
}

void spawn_logged(const asio::any_io_executor& executor, asio::awaitable<void> task,
                  const char* name) {
  asio::co_spawn(executor, std::move(task), [name](const std::exception_ptr& error) {
    if (!error)
      return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("{} ended with an exception (a bug): {}", name, e.what());
    } catch (...) {
      spdlog::error("{} ended with an unknown exception (a bug)", name);
    }
  });
}

asio::awaitable<std::error_code> dial(tcp::socket& socket, const std::string& host,
                                      std::uint16_t port, std::chrono::milliseconds timeout) {
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer deadline(executor);
  // Shared with the timer's handler, which may run after this frame is gone (its
  // expiry already queued when the connect completed): it then touches nothing.
  struct State {
    bool expired = false;
    bool done = false;
  };
  auto state = std::make_shared<State>();
  deadline.expires_after(timeout);
  deadline.async_wait([&socket, state](std::error_code ec) {
    if (ec || state->done)
      return;
    state->expired = true;
    std::error_code ignored;
    socket.close(ignored);
  });
  const bool& expired = state->expired;
  struct Finish {
    State& state;
    asio::steady_timer& timer;
    ~Finish() {
      state.done = true;
      timer.cancel();
    }
  } finish{*state, deadline};
  std::vector<tcp::endpoint> endpoints;
  std::error_code ec;
  if (host == "localhost") {
    endpoints = {{asio::ip::address_v4::loopback(), port},
                 {asio::ip::address_v6::loopback(), port}};
  } else if (auto address = asio::ip::make_address(host, ec); !ec) {
    endpoints = {{address, port}};
  } else {
    tcp::resolver resolver(executor);
    auto [rec, results] = co_await resolver.async_resolve(host, std::to_string(port), kAwait);
    if (rec)
      co_return expired ? asio::error::timed_out : rec;
    for (const auto& entry : results)
      endpoints.push_back(entry.endpoint());
  }
  ec = asio::error::host_not_found;
  for (const auto& endpoint : endpoints) {
    if (expired)
      break;
    std::error_code ignored;
    socket.close(ignored);
    std::tie(ec) = co_await socket.async_connect(endpoint, kAwait);
    if (!ec && !expired)
      break;
  }
  if (expired)
    co_return asio::error::timed_out;
  co_return ec;
}

struct Session::Tls {
  Tls(tcp::socket& socket, const TlsSide& side)
      : stream(socket, side.context->native()), server(side.server) {
    if (!side.server && !side.server_name.empty()) {
      // SNI, and the name the server's certificate must carry.
      // SSL_set_tlsext_host_name() is a macro with a C cast; this is what it expands to.
      ::SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(side.server_name.c_str()));
      stream.set_verify_callback(asio::ssl::host_name_verification(side.server_name));
    }
  }
  asio::ssl::stream<tcp::socket&> stream;
  bool server;
};

Session::Session(tcp::socket socket, std::shared_ptr<SessionHandler> handler,
                 SessionOptions options, const TlsSide& tls, std::unique_ptr<SessionGate> gate)
    : socket_(std::move(socket)),
      handler_(std::move(handler)),
      gate_(std::move(gate)),
      options_(options),
      decoder_(options.max_frame_bytes),
      outbox_(options.max_queue_bytes),
      wake_writer_(socket_.get_executor()),
      wake_reader_(socket_.get_executor()),
      read_stall_(socket_.get_executor()),
      write_stall_(socket_.get_executor()),
      hello_(socket_.get_executor()),
      linger_(socket_.get_executor()),
      tick_(socket_.get_executor()),
      read_chunk_(options.read_chunk) {
  wake_writer_.expires_at(asio::steady_timer::time_point::max());
  wake_reader_.expires_at(asio::steady_timer::time_point::max());
  std::error_code ec;
  const auto remote = socket_.remote_endpoint(ec);
  if (!ec) {
    loopback_ = is_loopback(remote.address());
    const std::string address = remote.address().to_string();
    peer_ = (remote.address().is_v6() ? "[" + address + "]" : address) + ":" +
            std::to_string(remote.port());
  } else {
    peer_ = "?";
  }
  socket_.set_option(tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);  // write_now()'s sends never block
  if (tls.context != nullptr)
    tls_ = std::make_unique<Tls>(socket_, tls);
}

Session::~Session() = default;

void Session::start() {
  if (options_.hello_timeout.count() > 0) {
    hello_.expires_after(options_.hello_timeout);
    hello_.async_wait([weak = weak_from_this()](std::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->established_ || self->stopped_)
        return;
      self->stop("nothing valid received within " +
                 std::to_string(self->options_.hello_timeout.count()) + " ms");
    });
  }
  if (options_.tick_interval.count() > 0)
    arm_tick();
  spawn_logged(socket_.get_executor(), run(), "session");
}

void Session::arm_tick() {
  tick_.expires_after(options_.tick_interval);
  tick_.async_wait([weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopped_)
      return;
    // Held back, we read nothing: the peer's bytes wait in the kernel, and its
    // silence cannot show (a consumer slower than 4 ticks is not a partition).
    if (self->bytes_in_ == self->ticks_seen_in_ && !self->held_ &&
        self->options_.ticks_missed > 0) {
      if (++self->silent_ticks_ >= self->options_.ticks_missed) {
        self->stop("no tick from the peer for " +
                   std::to_string(self->options_.ticks_missed *
                                  static_cast<unsigned>(self->options_.tick_interval.count())) +
                   " ms (a partition, or a frozen peer)");
        return;
      }
    } else {
      self->silent_ticks_ = 0;
    }
    self->ticks_seen_in_ = self->bytes_in_;
    // Nothing of ours went out meanwhile: a tick, so that the peer hears from us.
    if (self->bytes_out_ == self->ticks_seen_out_ && self->outbox_.empty() && self->gate_open() &&
        !self->closing_ && !self->writes_ended_) {
      self->send(self->options_.tick_frame);
      ++self->ticks_sent_;
    }
    self->ticks_seen_out_ = self->bytes_out_;
    self->arm_tick();
  });
}

asio::awaitable<void> Session::run() {
  auto self = shared_from_this();
  if (tls_) {
    auto [ec] = co_await tls_->stream.async_handshake(
        tls_->server ? asio::ssl::stream_base::server : asio::ssl::stream_base::client, kAwait);
    if (stopped_)
      co_return;
    if (ec) {
      stop("TLS handshake failed: " + ec.message());
      co_return;
    }
    // The dialler has verified the acceptor's certificate: without a cookie that is
    // the whole handshake, and a node it sends to never says anything else (an
    // acceptor still waits for a first valid frame, its guard against idle peers).
    if (!gate_ && !tls_->server)
      established();
  }
  if (gate_) {
    if (auto opening = gate_->opening())
      send_gate(*opening);
  }
  loops_ = 2;
  spawn_logged(socket_.get_executor(), write_loop(), "session writer");
  co_await read_loop();
}

void Session::refuse(std::string_view body) {
  closed("refused");  // before anything could be delivered
  send(body);
  loops_ = 2;
  spawn_logged(socket_.get_executor(), write_loop(), "session writer");
  spawn_logged(socket_.get_executor(), read_loop(), "session reader");
  close_after_flush("refused");
}

void Session::established() {
  established_ = true;
  hello_.cancel();
}

void Session::resume() {
  if (!held_)
    return;
  held_ = false;
  wake_reader_.cancel_one();
}

void Session::arm_stall(asio::steady_timer& timer, const char* what) {
  if (options_.stall_timeout.count() <= 0)
    return;
  timer.expires_after(options_.stall_timeout);
  timer.async_wait([weak = weak_from_this(), what](std::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopped_)
      return;
    self->stop("stalled " + std::to_string(self->options_.stall_timeout.count()) + " ms " + what +
               " (buffered=" + std::to_string(self->decoder_.buffered()) +
               " queued=" + std::to_string(self->queued_bytes()) + ")");
  });
}

// Not a ?: inside co_await: g++ 12 destroys the unselected awaitable's frame.
Session::IoResult Session::read_some(asio::mutable_buffer buffer) {
  if (tls_)
    return tls_->stream.async_read_some(buffer, kAwait);
  return socket_.async_read_some(buffer, kAwait);
}

Session::IoResult Session::write_some(asio::const_buffer buffer) {
  if (tls_)
    return tls_->stream.async_write_some(buffer, kAwait);
  return socket_.async_write_some(buffer, kAwait);
}

asio::awaitable<void> Session::read_loop() {
  auto self = shared_from_this();
  std::size_t drained = 0;
  std::string why;
  for (;;) {
    if (stopped_)
      break;
    if (closing_) {
      // Lingering: discard what the peer still sends until it closes.
      char sink[4096];
      auto [ec, n] = co_await read_some(asio::buffer(sink));
      drained += n;
      if (ec || drained > kMaxDrainBytes)
        break;
      continue;
    }
    const bool over_queue = !writes_ended_ && queued_bytes() > options_.pause_reads_above;
    if (held_ || over_queue) {
      // Held back: by the handler (resume()), or by replies the peer does not read
      // (the writer resumes us; a peer that never reads stalls the writer).
      held_ = true;
      co_await wake_reader_.async_wait(kAwait);
      continue;
    }
    if (pending_input_ && gate_ && !gate_open_) {
      pending_input_ = false;
      if (!feed_gate())
        continue;             // refused (closing), or waiting for the peer's next frame
      pending_input_ = true;  // open: what followed the handshake goes to the handler
    }
    if (pending_input_) {
      pending_input_ = false;
      if (!handler_->on_readable(*this)) {
        held_ = true;
        pending_input_ = true;
        continue;
      }
      continue;  // the handler may have closed or stopped us
    }
    if (decoder_.buffered() > 0) {
      arm_stall(read_stall_, "inside a frame");
    } else {
      read_stall_.cancel();
    }
    auto room = decoder_.prepare(read_chunk_);
    reading_ = true;
    auto [ec, n] = co_await read_some(asio::buffer(room.data(), room.size()));
    reading_ = false;
    read_stall_.cancel();  // re-armed before the next read; never while held back
    if (stopped_)
      break;
    if (ec) {
      why = describe_read_end(ec, decoder_);
      break;
    }
    if (n == room.size() && read_chunk_ < options_.max_read_chunk)
      read_chunk_ = std::min(read_chunk_ * 2, options_.max_read_chunk);
    decoder_.commit(n);
    bytes_in_ += n;
    pending_input_ = true;
  }
  read_stall_.cancel();
  if (!write_error_.empty())
    why = write_error_;  // what ended it first
  if (!closing_ && !stopped_) {
    // The peer ended its side: deliver nothing more, write what is queued, close.
    closed(why);
    close_after_flush(why);
  }
  loop_done();
}

asio::awaitable<void> Session::write_loop() {
  auto self = shared_from_this();
  while (!stopped_ && !writes_ended_) {
    if (!gate_out_.empty()) {
      // The handshake's frames go first, alone: nothing queued by the handler is
      // written before the gate opens.
      std::string frames = std::move(gate_out_);
      gate_out_.clear();
      for (std::size_t at = 0; at < frames.size() && !stopped_;) {
        arm_stall(write_stall_, "writing the handshake");
        auto [ec, n] = co_await write_some(asio::buffer(frames.data() + at, frames.size() - at));
        write_stall_.cancel();
        if (!stopped_ && ec)
          stop("write failed: " + ec.message());
        at += n;
      }
      continue;
    }
    const bool gate_shut = gate_ && !gate_open_;
    if (outbox_.empty() || gate_shut) {
      if (closing_) {
        std::error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        break;
      }
      outbox_.trim(kKeepIdleBuffer);
      writer_idle_ = true;
      co_await wake_writer_.async_wait(kAwait);
      writer_idle_ = false;
      continue;
    }
    std::uint64_t frames_end = 0;
    std::string chunk = outbox_.take(frames_end);
    writing_ = chunk.size();
    for (std::size_t at = 0; at < chunk.size();) {
      const auto buffer = asio::buffer(chunk.data() + at, chunk.size() - at);
      arm_stall(write_stall_, "writing: the peer reads nothing");
      auto [ec, n] = co_await write_some(buffer);
      write_stall_.cancel();
      if (!stopped_ && ec) {
        writing_ = 0;
        write_failed("write failed: " + ec.message());
      }
      if (stopped_ || writes_ended_) {
        loop_done();
        co_return;
      }
      at += n;
      writing_ -= n;
      bytes_out_ += n;
      if (at == chunk.size())
        frames_written_ = frames_end;
      handler_->on_written(*this, n, frames_written_);
      if (held_ && !closing_ && queued_bytes() <= options_.pause_reads_above &&
          options_.pause_reads_above != SIZE_MAX) {
        resume();
      }
    }
    outbox_.recycle(std::move(chunk));
  }
  loop_done();
}

bool Session::feed_gate() {
  std::error_code ec;
  while (!gate_open_ && !closing_) {
    auto body = decoder_.next(ec);
    if (!body)
      break;
    SessionGate::Step step = gate_->on_frame(*body);
    if (step.reply)
      send_gate(*step.reply);
    if (step.state == SessionGate::State::refused) {
      close_after_flush("handshake refused: " + step.error);
      return false;
    }
    if (step.state == SessionGate::State::open) {
      gate_open_ = true;
      established();
      flush();  // what the handler queued meanwhile
      return true;
    }
  }
  if (ec)
    close_after_flush("handshake: " + describe_frame_error(ec, decoder_));
  return false;
}

void Session::loop_done() {
  if (--loops_ > 0)
    return;
  stop(closing_ ? "closed" : "ended");
}

void Session::send_gate(std::string_view body) {
  append_frame(gate_out_, body);
  if (writer_idle_)
    wake_writer_.cancel_one();
}

bool Session::send(std::string_view body) {
  std::string* out = reserve(body.size() + kFrameHeaderBytes);
  if (out == nullptr)
    return false;
  append_frame(*out, body);
  commit();
  flush();
  return true;
}

void Session::flush() {
  if (writer_idle_ && !outbox_.empty() && gate_open())
    wake_writer_.cancel_one();
}

void Session::write_now() {
  if (stopped_ || outbox_.empty())
    return;
  if (tls_ || !writer_idle_ || !gate_open() || outbox_.chunk_count() != 1 ||
      outbox_.front().size() > kDirectWriteMax) {
    flush();
    return;
  }
  std::error_code ec;
  const std::string_view bytes = outbox_.front();
  const std::size_t n = socket_.write_some(asio::buffer(bytes.data(), bytes.size()), ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    stop("write failed: " + ec.message());
    return;
  }
  std::uint64_t frames_end = 0;
  if (n > 0 && outbox_.consume_front(n, frames_end))
    frames_written_ = frames_end;
  if (n > 0)
    handler_->on_written(*this, n, frames_written_);
  flush();  // what the socket did not take
}

std::ptrdiff_t Session::write_direct(std::string_view bytes) {
  std::lock_guard lock(direct_mutex_);
  if (!direct_open_)
    return -1;
  const ssize_t n =
      ::send(socket_.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n >= 0)
    return n;
  return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
}

void Session::end_direct() {
  std::lock_guard lock(direct_mutex_);
  direct_open_ = false;
}

void Session::close_after_flush(std::string_view reason) {
  if (closing_ || stopped_)
    return;
  end_direct();
  closing_ = true;
  closed(reason);
  resume();
  wake_writer_.cancel_one();
  wake_reader_.cancel_one();
  linger_.expires_after(kLinger);
  linger_.async_wait([weak = weak_from_this()](std::error_code ec) {
    if (auto self = weak.lock(); self && !ec)
      self->stop("linger time over");
  });
}

void Session::write_failed(std::string why) {
  if (tls_ || closing_) {
    stop(why);
    return;
  }
  // A reset (drawn by our tick after the peer closed, say) leaves what the peer
  // sent before it in our kernel, readable: deliver that, and end when the read
  // loop meets the end. Nothing more is written.
  write_error_ = std::move(why);
  writes_ended_ = true;
  end_direct();
  resume();  // a hold for our own backlog is over; the handler may hold again
}

std::optional<std::size_t> Session::unacknowledged_bytes() {
  int bytes = 0;
  if (stopped_ || ::ioctl(socket_.native_handle(), SIOCOUTQ, &bytes) != 0 || bytes < 0)
    return std::nullopt;
  return static_cast<std::size_t>(bytes);
}

void Session::end_writes() {
  if (stopped_ || writes_ended_)
    return;
  writes_ended_ = true;
  end_direct();
  std::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
}

void Session::stop(std::string_view reason) {
  if (stopped_)
    return;
  stopped_ = true;
  closing_ = true;
  end_direct();  // no write_direct() on the descriptor once closed (or reused)
  std::error_code ignored;
  socket_.close(ignored);
  wake_writer_.cancel();
  wake_reader_.cancel();
  read_stall_.cancel();
  write_stall_.cancel();
  hello_.cancel();
  linger_.cancel();
  tick_.cancel();
  writing_ = 0;
  closed(reason);
}

void Session::closed(std::string_view reason) {
  if (closed_called_)
    return;
  closed_called_ = true;
  handler_->on_closed(*this, reason);
}

}  // namespace distflow
