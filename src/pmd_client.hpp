#pragma once

// The one PMD client. A PmdConnection is a session (session.hpp) to a PMD on an
// io_context's thread: requests answered in order through callbacks, events to
// a handler. A node's PMD link runs one on its I/O thread; the one-shot commands
// (admin, send, watch) use PmdClient, which runs the same code on a private
// io_context until each answer arrives.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>

#include "pmd_protocol.hpp"

namespace distflow {

/// What is on a PMD endpoint: a distflow PMD, nothing (refused), or something else.
enum class PmdProbe { answers, refused, not_a_pmd, unreachable };

class Credentials;
class Session;

class PmdConnection : public std::enable_shared_from_this<PmdConnection> {
 public:
  /// The answer to one request, or nullptr with `error` ("connection to pmd ... lost").
  using ReplyHandler = std::function<void(const PmdReply* reply, const std::string& error)>;
  using EventHandler = std::function<void(const PmdReply& event)>;
  /// The connection ended (once): why, and what kind of failure when it never
  /// answered as a PMD.
  using ClosedHandler = std::function<void(const std::string& why)>;

  /// Dials the PMD within `timeout`. nullptr with `error` set to a complete message
  /// ("no distflow PMD on 127.0.0.1:4369: connection refused") and `kind`. A PMD
  /// reached at a non-loopback address is spoken to through `credentials` (TLS,
  /// then the cookie handshake proving `our_name`), when given.
  static asio::awaitable<std::shared_ptr<PmdConnection>> open(
      asio::io_context& io, PmdEndpoint endpoint, std::chrono::milliseconds timeout,
      std::string& error, PmdProbe& kind, const Credentials* credentials = nullptr,
      std::string our_name = {});
  ~PmdConnection();

  /// Queues one request; `done` runs on the I/O thread with its answer, or with
  /// nullptr once the connection is gone (never inside this call).
  void request(std::string_view type, std::string_view payload_json, ReplyHandler done);
  void on_event(EventHandler handler) { on_event_ = std::move(handler); }
  void on_closed(ClosedHandler handler) { on_closed_ = std::move(handler); }
  /// Closes; pending requests fail with "closed". Idempotent.
  void close();
  bool closed() const { return closed_; }
  /// True once a frame parsed as the PMD protocol (it is a distflow PMD).
  bool answered() const { return answered_; }
  /// Why it closed, when closed, and the kind of failure.
  const std::string& close_reason() const { return close_reason_; }
  PmdProbe close_kind() const { return close_kind_; }
  const PmdEndpoint& endpoint() const { return endpoint_; }

 private:
  class Handler;
  PmdConnection(asio::io_context& io, PmdEndpoint endpoint);
  void handle_frame(std::string_view body);
  void handle_closed(std::string_view reason, bool framing_error);

  asio::io_context& io_;
  PmdEndpoint endpoint_;
  std::shared_ptr<Session> session_;
  std::map<std::uint64_t, ReplyHandler> pending_;
  std::uint64_t next_id_ = 1;
  EventHandler on_event_;
  ClosedHandler on_closed_;
  std::string close_reason_;
  PmdProbe close_kind_ = PmdProbe::unreachable;
  bool answered_ = false;
  bool refused_checked_ = false;  // the first frame was looked at for a refusal
  std::string refusal_;           // the PMD refused us, in these words
  bool closed_ = false;
};

/// A blocking client for one-shot commands: every call runs the connection's
/// io_context until its answer. Every call throws distflow::Error with a complete
/// message ("no distflow PMD on 127.0.0.1:4369: connection refused", or, for a
/// port held by something else, a hint at DISTFLOW_PMD_PORT).
class PmdClient {
 public:
  static std::unique_ptr<PmdClient> connect(
      const PmdEndpoint& endpoint, std::chrono::milliseconds timeout = std::chrono::seconds(2),
      const Credentials* credentials = nullptr, const std::string& our_name = {});
  ~PmdClient();
  PmdClient(const PmdClient&) = delete;
  PmdClient& operator=(const PmdClient&) = delete;

  /// Sends one request and waits for its response (events arriving meanwhile are queued).
  PmdReply request(std::string_view type, std::string_view payload_json);
  /// resolve: the node, or nullopt for "Node not found".
  std::optional<NodeInfo> resolve(std::string_view alias_or_id);
  std::vector<NodeInfo> list();
  /// Subscribes to events; returns the snapshot (from the reply, else from list()).
  /// `cluster` (a clustered PMD, issue 15): false for its local nodes only; unset:
  /// its default (the whole cluster).
  std::vector<NodeInfo> watch(std::optional<bool> cluster = std::nullopt);
  /// Blocks up to `timeout` for the next event; nullopt on timeout. Throws when the PMD goes away.
  std::optional<PmdReply> next_event(std::chrono::milliseconds timeout);

 private:
  struct State;
  explicit PmdClient(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

/// Connects and asks `list`; `why` gets the complete error message when not `answers`.
PmdProbe probe_pmd(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout,
                   std::string* why = nullptr);
/// True when something answers the PMD protocol on `endpoint` within `timeout`.
bool pmd_answers(const PmdEndpoint& endpoint, std::chrono::milliseconds timeout);

}  // namespace distflow
