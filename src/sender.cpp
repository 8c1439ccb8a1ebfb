#include "sender.hpp"

#include <cerrno>
#include <cstring>
#include <unistd.h>

#include <asio.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "framing.hpp"
#include "messages.hpp"
#include "ndjson.hpp"

namespace distflow {
namespace {

using asio::ip::tcp;

constexpr std::size_t kReadChunk = 1u << 20;   // stdin read size
constexpr std::size_t kWriteBatch = 1u << 20;  // frames buffered per socket write
// Ids are at most 128 bytes (PROTOCOL.md §2.1), so the envelope fits in this.
constexpr std::size_t kEnvelopeRoom = 4096;

/// One blocking connection to the resolved target, and the encoder for its route.
class Link {
 public:
  explicit Link(const SendOptions& options)
      : from_(options.from.empty() ? "send-" + std::to_string(::getpid()) : options.from) {
    NodeInfo node = resolve(options);
    target_ = fmt::format("'{}' ({}:{})", options.target, node.host, node.port);
    connect(node, options.connect_timeout);
    encoder_.emplace(from_, node.node_id, std::string_view{});
  }

  const MessageEncoder& encoder() const { return *encoder_; }

  void write(std::string& frames, std::uint64_t sent_before) {
    if (frames.empty())
      return;
    asio::error_code ec;
    asio::write(socket_, asio::buffer(frames), ec);
    if (ec) {
      throw Error(fmt::format("connection to {} lost after {} messages: {}", target_, sent_before,
                              ec.message()));
    }
    frames.clear();
  }

  /// Half-closes: the kernel still delivers everything written.
  void close() {
    asio::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    socket_.close(ignored);
  }

 private:
  static NodeInfo resolve(const SendOptions& options) {
    auto pmd = PmdClient::connect(options.pmd, options.connect_timeout);
    auto node = pmd->resolve(options.target);
    if (!node) {
      throw Error(fmt::format("unknown target '{}': no node with that alias or id on pmd {}",
                              options.target, options.pmd.to_string()));
    }
    return *node;
  }

  void connect(const NodeInfo& node, std::chrono::milliseconds timeout) {
    tcp::resolver resolver(io_);
    asio::error_code ec;
    const auto endpoints = resolver.resolve(node.host, std::to_string(node.port), ec);
    if (ec)
      throw Error(fmt::format("cannot resolve host of {}: {}", target_, ec.message()));
    asio::error_code result = asio::error::timed_out;
    asio::async_connect(socket_, endpoints,
                        [&](const asio::error_code& e, const tcp::endpoint&) { result = e; });
    io_.run_for(timeout);
    if (!io_.stopped()) {
      socket_.close(ec);
      io_.run();
      result = asio::error::timed_out;
    }
    if (result)
      throw Error(fmt::format("cannot connect to {}: {}", target_, result.message()));
    socket_.set_option(tcp::no_delay(true), ec);
  }

  std::string from_;
  std::string target_;
  asio::io_context io_{1};
  tcp::socket socket_{io_};
  std::optional<MessageEncoder> encoder_;
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
  Link link(options);
  SendResult result;
  std::string frames;
  const std::int64_t timestamp = now_ms();
  for (std::uint64_t i = 0; i < options.count; ++i) {
    link.encoder().append(frames, body, timestamp);
    ++result.sent;
    if (frames.size() >= kWriteBatch)
      link.write(frames, result.sent);
  }
  link.write(frames, result.sent);
  link.close();
  return result;
}

SendResult send_stream(const SendOptions& options, int input_fd, const SendDiagnostic& diagnostic) {
  Link link(options);
  JsonValidator validator;
  NdjsonReader reader(max_send_payload_bytes());
  SendResult result;
  std::string frames;
  frames.reserve(kWriteBatch + kReadChunk);
  std::string why;

  auto handle = [&](const NdjsonLine& line, std::int64_t timestamp) {
    if (line.too_long) {
      ++result.invalid;
      diagnostic(fmt::format("line {}: longer than the limit of {} bytes", line.number,
                             reader.max_line_bytes()));
      return;
    }
    if (validator.validate(line.text, &why)) {
      ++result.invalid;
      diagnostic(fmt::format("line {}: invalid JSON: {}", line.number, why));
      return;
    }
    for (std::uint64_t i = 0; i < options.count; ++i) {
      link.encoder().append(frames, line.text, timestamp);
    }
    result.sent += options.count;
    if (frames.size() >= kWriteBatch)
      link.write(frames, result.sent);
  };

  for (;;) {
    auto room = reader.prepare(kReadChunk);
    const ssize_t n = ::read(input_fd, room.data(), room.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw Error(fmt::format("cannot read input: {}", std::strerror(errno)));
    if (n == 0)
      break;
    reader.commit(static_cast<std::size_t>(n));
    // One clock read per chunk: lines read together share a timestamp.
    const std::int64_t timestamp = now_ms();
    while (auto line = reader.next())
      handle(*line, timestamp);
    // Whatever one read brought goes out now: a slow producer is never held back.
    link.write(frames, result.sent);
  }
  if (auto line = reader.finish())
    handle(*line, now_ms());
  link.write(frames, result.sent);
  link.close();
  spdlog::debug("send finished sent={} invalid={} lines={}", result.sent, result.invalid,
                reader.lines_seen());
  return result;
}

}  // namespace distflow
