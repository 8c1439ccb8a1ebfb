#pragma once

// The shared-cookie handshake (issue 12, PROTOCOL.md §3.4) as a SessionGate: a
// mutual challenge-response in ordinary frames. Both sides send a 128-bit random
// nonce and prove the cookie with HMAC-SHA256 over both nonces and both names;
// the proofs are compared in constant time. Pure apart from the random nonce.

#include <optional>
#include <string>
#include <string_view>

#include "gate.hpp"

namespace distflow {

/// The handshake's protocol version (the "v" of hello and challenge).
inline constexpr int kHandshakeVersion = 1;

class CookieGate final : public SessionGate {
 public:
  enum class Role { dialler, acceptor };

  /// `name`: ours as the peer will see it (a node id, "pmd", "send-<pid>"); `cookie`
  /// is not empty. `expected_peer` (dialler): the name the acceptor must prove, empty
  /// for any. `nonce_hex` is for tests and the worked example only (32 lowercase hex
  /// digits); empty: 16 random bytes. Throws distflow::Error for an empty cookie, an
  /// invalid name or nonce, or when no random bytes can be had.
  CookieGate(Role role, std::string_view cookie, std::string name, std::string expected_peer = {},
             std::string nonce_hex = {});
  ~CookieGate() override;
  CookieGate(const CookieGate&) = delete;
  CookieGate& operator=(const CookieGate&) = delete;

  std::optional<std::string> opening() override;
  Step on_frame(std::string_view body) override;
  const std::string& peer_name() const override { return peer_open_; }

 private:
  Step refuse(std::string error, bool tell_peer = true);
  Step on_hello(std::string_view body);
  Step on_challenge(std::string_view body);
  Step on_proof(std::string_view body);

  Role role_;
  std::string cookie_;
  std::string name_;
  std::string expected_peer_;
  std::string nonce_;       // ours, hex
  std::string peer_nonce_;  // theirs, hex
  std::string peer_;        // as the peer said it
  std::string peer_open_;   // once proven
  State state_ = State::pending;
  bool started_ = false;  // dialler: hello sent; acceptor: challenge sent
};

/// The proof one side sends, as 64 lowercase hex digits: HMAC-SHA256 keyed with
/// `cookie` over "distflow-handshake-v1\0" + role + "\0" + nonce_c + "\0" + nonce_s +
/// "\0" + name_c + "\0" + name_s, role being "server" (the acceptor's proof) or
/// "client" (the dialler's); nonces as their hex text.
std::string handshake_proof(std::string_view cookie, bool server, std::string_view nonce_c,
                            std::string_view nonce_s, std::string_view name_c,
                            std::string_view name_s);

}  // namespace distflow
