#pragma once

// A gate: the protocol step a connection runs before its handler sees any frame
// (issue 12: the shared-cookie challenge). Pure: frames in, frames out; the
// session (session.hpp) carries them and enforces the handshake's deadline.

#include <optional>
#include <string>
#include <string_view>

namespace distflow {

class SessionGate {
 public:
  virtual ~SessionGate() = default;

  enum class State { pending, open, refused };
  struct Step {
    std::optional<std::string> reply;  ///< a frame body to send the peer
    State state = State::pending;
    std::string error;  ///< why, when refused ("cookie mismatch")
  };

  /// The frame the dialling side sends first; nullopt for the accepting side.
  virtual std::optional<std::string> opening() = 0;
  /// One frame from the peer. Once `open`, later frames go to the session's
  /// handler; `refused` closes the connection after `reply` (if any) is written.
  virtual Step on_frame(std::string_view body) = 0;
  /// The peer's name as the handshake proved it (empty before `open`).
  virtual const std::string& peer_name() const = 0;
};

}  // namespace distflow
