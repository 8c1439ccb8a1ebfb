#include "pmd_client.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "framing.hpp"

namespace distflow {
namespace {

using Clock = std::chrono::steady_clock;
// Replies can be large (a list of many nodes); still bounded.
constexpr std::size_t kMaxReplyBytes = 64u << 20;

/// An Error that also says what kind of failure it was (for probe_pmd).
class ClientError : public Error {
 public:
  ClientError(PmdProbe kind, const std::string& message) : Error(message), kind_(kind) {}
  PmdProbe kind() const { return kind_; }

 private:
  PmdProbe kind_;
};

std::string not_a_pmd(const PmdEndpoint& endpoint, std::string_view detail) {
  return endpoint.to_string() + " is not a distflow PMD (" + std::string(detail) +
         "); another service holds the port (Erlang's epmd also uses 4369): run distflow's PMD "
         "on another port and select it with DISTFLOW_PMD_PORT or --port";
}

int remaining_ms(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

class SocketPmdClient final : public PmdClient {
 public:
  SocketPmdClient(PmdEndpoint endpoint, std::chrono::milliseconds timeout)
      : endpoint_(std::move(endpoint)), timeout_(timeout), decoder_(kMaxReplyBytes) {}
  ~SocketPmdClient() override {
    if (fd_ >= 0)
      ::close(fd_);
  }
  SocketPmdClient(const SocketPmdClient&) = delete;
  SocketPmdClient& operator=(const SocketPmdClient&) = delete;

  void connect_socket();

  PmdReply request(std::string_view type, std::string_view payload_json) override {
    const std::uint64_t id = next_id_++;
    std::string frame;
    append_frame(frame, encode_request(type, payload_json, id));
    write_all(frame);
    const auto deadline = Clock::now() + timeout_;
    for (;;) {
      auto reply = read_reply(deadline);
      if (!reply) {
        throw ClientError(answered_ ? PmdProbe::unreachable : PmdProbe::not_a_pmd,
                          "no answer from " + endpoint_.to_string() + " within " +
                              std::to_string(timeout_.count()) + " ms" +
                              (answered_ ? "" : "; is it a distflow PMD?"));
      }
      if (reply->is_event) {
        events_.push_back(std::move(*reply));
        continue;
      }
      if (reply->request_id && *reply->request_id != id)
        continue;  // a stale answer
      return std::move(*reply);
    }
  }

  std::optional<NodeInfo> resolve(std::string_view alias_or_id) override {
    const std::string payload = nlohmann::json{{"alias", std::string(alias_or_id)}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
    auto reply = request("resolve", payload);
    if (reply.error == "Node not found")
      return std::nullopt;
    check(reply);
    if (!reply.node)
      throw Error("pmd " + endpoint_.to_string() + ": resolve answer without node");
    return reply.node;
  }

  std::vector<NodeInfo> list() override {
    auto reply = request("list", "{}");
    check(reply);
    return reply.nodes ? std::move(*reply.nodes) : std::vector<NodeInfo>{};
  }

  std::vector<NodeInfo> watch() override {
    auto reply = request("watch", R"({"snapshot":true})");
    check(reply);
    if (reply.nodes)
      return std::move(*reply.nodes);
    return list();  // the original PMD ignores the snapshot extension
  }

  std::optional<PmdReply> next_event(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (!events_.empty()) {
        PmdReply event = std::move(events_.front());
        events_.pop_front();
        return event;
      }
      auto reply = read_reply(deadline);
      if (!reply)
        return std::nullopt;
      if (reply->is_event)
        return reply;
    }
  }

 private:
  void check(const PmdReply& reply) const {
    if (!reply.error.empty())
      throw Error("pmd " + endpoint_.to_string() + ": " + reply.error);
  }

  void write_all(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        throw ClientError(
            answered_ ? PmdProbe::unreachable : PmdProbe::not_a_pmd,
            "cannot write to the PMD on " + endpoint_.to_string() + ": " + std::strerror(errno));
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  /// Next frame from the PMD, nullopt at the deadline. Throws when the peer closes
  /// or sends something that is not the PMD protocol.
  std::optional<PmdReply> read_reply(Clock::time_point deadline) {
    for (;;) {
      std::error_code ec;
      if (auto body = decoder_.next(ec)) {
        std::string why;
        auto reply = parse_reply(*body, &why);
        if (!reply) {
          if (!answered_)
            throw ClientError(PmdProbe::not_a_pmd, not_a_pmd(endpoint_, why));
          continue;  // tolerate one odd frame from a real PMD
        }
        answered_ = true;
        return reply;
      }
      if (ec) {
        throw ClientError(PmdProbe::not_a_pmd,
                          not_a_pmd(endpoint_, "it sent " + describe_frame_error(ec, decoder_)));
      }
      pollfd pfd{fd_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
      if (ready < 0 && errno == EINTR)
        continue;
      if (ready == 0)
        return std::nullopt;
      auto room = decoder_.prepare(16 * 1024);
      const ssize_t n = ::recv(fd_, room.data(), room.size(), 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        if (!answered_) {
          throw ClientError(PmdProbe::not_a_pmd,
                            not_a_pmd(endpoint_, "it closed the connection without answering"));
        }
        throw ClientError(PmdProbe::unreachable,
                          "the PMD on " + endpoint_.to_string() + " closed the connection");
      }
      decoder_.commit(static_cast<std::size_t>(n));
    }
  }

  PmdEndpoint endpoint_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  FrameDecoder decoder_;
  std::deque<PmdReply> events_;
  std::uint64_t next_id_ = 1;
  bool answered_ = false;
};

void SocketPmdClient::connect_socket() {
  const std::string where = endpoint_.to_string();
  TcpConnection c = connect_tcp(endpoint_.host, endpoint_.port, timeout_);
  if (!c.resolve_error.empty()) {
    throw ClientError(PmdProbe::unreachable,
                      "cannot resolve PMD host '" + endpoint_.host + "': " + c.resolve_error);
  }
  if (c.fd < 0) {
    const std::string why = c.error == ECONNREFUSED ? "connection refused"
                            : c.error == ETIMEDOUT  ? "connection timed out"
                                                    : std::strerror(c.error);
    throw ClientError(c.error == ECONNREFUSED ? PmdProbe::refused : PmdProbe::unreachable,
                      "no distflow PMD on " + where + ": " + why);
  }
  fd_ = c.fd;
}

/// One non-blocking connect() to `address`, waited for until `deadline`; the
/// socket is made blocking again. Returns the socket, or -1 with errno set.
int connect_one(const sockaddr* address, socklen_t length, Clock::time_point deadline) {
  const int fd = ::socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  int rc = ::connect(fd, address, length);
  if (rc < 0 && errno == EINPROGRESS) {
    pollfd pfd{fd, POLLOUT, 0};
    int ready = 0;
    do {
      ready = ::poll(&pfd, 1, remaining_ms(deadline));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) {
      errno = ETIMEDOUT;
      rc = -1;
    } else {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
  }
  if (rc < 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/// `host` as an IPv4 or IPv6 literal; false when it is not one.
bool parse_ip_literal(const std::string& host, std::uint16_t port, sockaddr_storage& out,
                      socklen_t& length) {
  out = sockaddr_storage{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

}  // namespace

TcpConnection connect_tcp(const std::string& host, std::uint16_t port,
                          std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  TcpConnection result;
  result.error = ECONNREFUSED;
  // The common cases need no resolver (getaddrinfo reads /etc files and, for
  // names, may load NSS modules): a literal address, or localhost.
  const std::vector<std::string> literals = host == "localhost"
                                                ? std::vector<std::string>{"127.0.0.1", "::1"}
                                                : std::vector<std::string>{host};
  bool all_literal = true;
  for (const std::string& literal : literals) {
    sockaddr_storage address;
    socklen_t length = 0;
    if (!parse_ip_literal(literal, port, address, length)) {
      all_literal = false;
      break;
    }
    result.fd = connect_one(reinterpret_cast<const sockaddr*>(&address), length, deadline);
    if (result.fd >= 0)
      return result;
    result.error = errno;
  }
  if (all_literal)
    return result;

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    result.resolve_error = gai_strerror(rc);
    return result;
  }
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    result.fd = connect_one(ai->ai_addr, ai->ai_addrlen, deadline);
    if (result.fd >= 0)
      break;
    result.error = errno;
  }
  ::freeaddrinfo(found);
  return result;
}

std::string PmdEndpoint::to_string() const {
  if (host.find(':') != std::string::npos)
    return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::unique_ptr<PmdClient> PmdClient::connect(const PmdEndpoint& endpoint,
                                              std::chrono::milliseconds timeout) {
  auto client = std::make_unique<SocketPmdClient>(endpoint, timeout);
  client->connect_socket();
  return client;
}

PmdProbe probe_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout,
                   std::string* why) {
  try {
    auto client = PmdClient::connect(endpoint, timeout);
    auto reply = client->request("list", "{}");
    if (!reply.nodes && reply.error.empty()) {
      if (why)
        *why = "unexpected answer to 'list' from " + endpoint.to_string();
      return PmdProbe::not_a_pmd;
    }
    return PmdProbe::answers;
  } catch (const ClientError& e) {
    if (why)
      *why = e.what();
    return e.kind();
  } catch (const Error& e) {
    if (why)
      *why = e.what();
    return PmdProbe::unreachable;
  }
}

bool pmd_answers(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout) {
  return probe_pmd(endpoint, timeout) == PmdProbe::answers;
}

}  // namespace distflow
