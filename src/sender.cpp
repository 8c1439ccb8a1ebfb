#include "sender.hpp"

#include <cerrno>
#include <cstring>
#include <optional>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "errors.hpp"
#include "framing.hpp"
#include "messages.hpp"
#include "ndjson.hpp"

namespace distflow {
namespace {

constexpr std::size_t kReadChunk = 1u << 20;   // stdin read size
constexpr std::size_t kWriteBatch = 1u << 20;  // frames buffered per socket write
// Ids are at most 128 bytes (PROTOCOL.md §2.1), so the envelope fits in this.
constexpr std::size_t kEnvelopeRoom = 4096;

/// One blocking connection to the resolved target, and the encoder for its route.
/// Plain sockets (no asio io_context): a one-shot send starts as a process, and
/// every syscall and page it touches before its one write is start-up time.
class Link {
 public:
  explicit Link(const SendOptions& options)
      : from_(options.from.empty() ? "send-" + std::to_string(::getpid()) : options.from) {
    NodeInfo node = resolve(options);
    target_ = fmt::format("'{}' ({}:{})", options.target, node.host, node.port);
    connect(node, options.connect_timeout);
    encoder_.emplace(from_, node.node_id, std::string_view{});
  }
  ~Link() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  const MessageEncoder& encoder() const { return *encoder_; }

  void write(std::string& frames, std::uint64_t sent_before) {
    std::string_view rest = frames;
    while (!rest.empty()) {
      const ssize_t n = ::send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        throw Error(fmt::format("connection to {} lost after {} messages: {}", target_, sent_before,
                                std::strerror(errno)));
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    frames.clear();
  }

  /// Half-closes: the kernel still delivers everything written.
  void close() {
    if (fd_ < 0)
      return;
    ::shutdown(fd_, SHUT_WR);
    ::close(fd_);
    fd_ = -1;
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
    TcpConnection c = connect_tcp(node.host, node.port, timeout);
    if (!c.resolve_error.empty())
      throw Error(fmt::format("cannot resolve host of {}: {}", target_, c.resolve_error));
    if (c.fd < 0)
      throw Error(fmt::format("cannot connect to {}: {}", target_, std::strerror(c.error)));
    fd_ = c.fd;
  }

  std::string from_;
  std::string target_;
  int fd_ = -1;
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
  NdjsonReader reader(std::min(options.max_line_bytes, max_send_payload_bytes()));
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
