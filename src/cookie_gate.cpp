#include "cookie_gate.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "address.hpp"
#include "errors.hpp"
#include "messages.hpp"

namespace distflow {
namespace {

constexpr std::size_t kNonceBytes = 16;
constexpr std::size_t kProofBytes = 32;  // SHA-256
constexpr std::size_t kMaxShownError = 200;
constexpr std::string_view kLabel = "distflow-handshake-v1";

/// One handshake frame's fields; absent ones stay nullopt.
struct HandshakeFrame {
  std::optional<std::string> type, v, name, nonce, proof, error;
};

/// The one place that reads handshake JSON (the JSON helpers may move: keep it here).
/// Returns why the body is not a handshake frame, or empty.
std::string parse_handshake_frame(std::string_view body, HandshakeFrame& out) {
  JsonObjectWalker walker;
  std::string why;
  if (walker.walk(body, false, &why))
    return why.empty() ? std::string("not a JSON object") : why;
  std::string storage;
  for (const JsonMember& member : walker.members()) {
    std::optional<std::string>* field = nullptr;
    if (member.key == "type") {
      field = &out.type;
    } else if (member.key == "name") {
      field = &out.name;
    } else if (member.key == "nonce") {
      field = &out.nonce;
    } else if (member.key == "proof") {
      field = &out.proof;
    } else if (member.key == "error") {
      field = &out.error;
    } else if (member.key == "v") {
      const char first = member.value.front();
      if (first != '-' && (first < '0' || first > '9'))
        return "'v' is not a number";
      out.v = std::string(member.value);
      continue;
    } else {
      continue;  // unknown keys are ignored, as everywhere in the protocol
    }
    if (member.value.front() != '"')
      return "'" + std::string(member.key) + "' is not a string";
    *field = std::string(json_string_text(member.value, storage));
  }
  return {};
}

std::string to_hex(const unsigned char* bytes, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool is_lower_hex(std::string_view text, std::size_t digits) {
  return text.size() == digits &&
         text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

/// A peer's text fit for an error message: printable ASCII, at most kMaxShownError bytes.
std::string sanitized(std::string_view text) {
  std::string out;
  for (const char c : text.substr(0, kMaxShownError)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  if (text.size() > kMaxShownError)
    out += "...";
  return out;
}

std::string frame_hello(std::string_view name, std::string_view nonce) {
  std::string out = R"({"type":"hello","v":1,"name":)";
  append_json_string(out, name);
  return out + R"(,"nonce":")" + std::string(nonce) + "\"}";
}

std::string frame_challenge(std::string_view name, std::string_view nonce, std::string_view proof) {
  std::string out = R"({"type":"challenge","v":1,"name":)";
  append_json_string(out, name);
  return out + R"(,"nonce":")" + std::string(nonce) + R"(","proof":")" + std::string(proof) + "\"}";
}

std::string frame_proof(std::string_view proof) {
  return R"({"type":"proof","proof":")" + std::string(proof) + "\"}";
}

std::string frame_error(std::string_view error) {
  std::string out = R"({"type":"handshake_error","error":)";
  append_json_string(out, error);
  return out + "}";
}

bool same_proof(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

/// Checks common to every received frame: JSON, a refusal from the peer, the type,
/// the version. Sets `error` (and `tell_peer`) when the handshake must end.
bool check_frame(std::string_view body, std::string_view expected, bool versioned,
                 HandshakeFrame& frame, std::string& error, bool& tell_peer) {
  tell_peer = true;
  if (std::string why = parse_handshake_frame(body, frame); !why.empty()) {
    error = "bad handshake frame: " + why;
    return false;
  }
  if (frame.type == "handshake_error") {
    tell_peer = false;
    error = "peer refused: " + (frame.error ? sanitized(*frame.error) : "no reason given");
    return false;
  }
  if (frame.type != expected) {
    const bool handshake =
        frame.type == "hello" || frame.type == "challenge" || frame.type == "proof";
    error = "bad handshake frame: expected '" + std::string(expected) + "', got " +
            (frame.type ? "'" + sanitized(*frame.type) + "'" : std::string("no 'type'")) +
            (handshake ? "" : " (is the peer configured without a cookie?)");
    return false;
  }
  if (versioned) {
    if (!frame.v) {
      error = "bad handshake frame: missing 'v'";
      return false;
    }
    if (*frame.v != "1") {
      error = "unsupported version " + sanitized(*frame.v);
      return false;
    }
  }
  return true;
}

/// The name and nonce of a hello or challenge; sets `error` when one is bad.
bool check_identity(const HandshakeFrame& frame, std::string& error) {
  if (!frame.name) {
    error = "bad handshake frame: missing 'name'";
    return false;
  }
  if (std::string why = node_name_error(*frame.name); !why.empty()) {
    error = "invalid peer name: " + why;
    return false;
  }
  if (!frame.nonce || !is_lower_hex(*frame.nonce, 2 * kNonceBytes)) {
    error = frame.nonce ? "bad handshake frame: 'nonce' is not 32 lowercase hex digits"
                        : "bad handshake frame: missing 'nonce'";
    return false;
  }
  return true;
}

bool check_proof_field(const HandshakeFrame& frame, std::string& error) {
  if (!frame.proof || !is_lower_hex(*frame.proof, 2 * kProofBytes)) {
    error = frame.proof ? "bad handshake frame: 'proof' is not 64 lowercase hex digits"
                        : "bad handshake frame: missing 'proof'";
    return false;
  }
  return true;
}

}  // namespace

std::string handshake_proof(std::string_view cookie, bool server, std::string_view nonce_c,
                            std::string_view nonce_s, std::string_view name_c,
                            std::string_view name_s) {
  std::string message(kLabel);
  message += '\0';
  message += server ? "server" : "client";
  for (const std::string_view part : {nonce_c, nonce_s, name_c, name_s}) {
    message += '\0';
    message += part;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  const unsigned char* ok =
      HMAC(EVP_sha256(), cookie.data(), static_cast<int>(cookie.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &mac_len);
  DISTFLOW_ASSERT(ok != nullptr && mac_len == kProofBytes);
  return to_hex(mac, mac_len);
}

CookieGate::CookieGate(Role role, std::string_view cookie, std::string name,
                       std::string expected_peer, std::string nonce_hex)
    : role_(role),
      cookie_(cookie),
      name_(std::move(name)),
      expected_peer_(std::move(expected_peer)),
      nonce_(std::move(nonce_hex)) {
  if (cookie_.empty())
    throw Error("cannot start a cookie handshake: the cookie is empty");
  if (std::string why = node_name_error(name_); !why.empty())
    throw Error("cannot start a cookie handshake as '" + sanitized(name_) + "': " + why);
  if (nonce_.empty()) {
    unsigned char random[kNonceBytes];
    if (RAND_bytes(random, sizeof random) != 1)
      throw Error("cannot start a cookie handshake: no random bytes for the nonce");
    nonce_ = to_hex(random, sizeof random);
  } else if (!is_lower_hex(nonce_, 2 * kNonceBytes)) {
    throw Error("cannot start a cookie handshake: the nonce is not 32 lowercase hex digits");
  }
}

CookieGate::~CookieGate() {
  OPENSSL_cleanse(cookie_.data(), cookie_.size());
}

std::optional<std::string> CookieGate::opening() {
  if (role_ != Role::dialler || started_)
    return std::nullopt;
  started_ = true;
  return frame_hello(name_, nonce_);
}

SessionGate::Step CookieGate::refuse(std::string error, bool tell_peer) {
  state_ = State::refused;
  Step step;
  if (tell_peer)
    step.reply = frame_error(error);
  step.state = State::refused;
  step.error = std::move(error);
  return step;
}

SessionGate::Step CookieGate::on_frame(std::string_view body) {
  if (state_ != State::pending)
    return refuse("bad handshake frame: the handshake is over", false);
  if (role_ == Role::acceptor)
    return started_ ? on_proof(body) : on_hello(body);
  return on_challenge(body);
}

SessionGate::Step CookieGate::on_hello(std::string_view body) {
  HandshakeFrame frame;
  std::string error;
  bool tell_peer = true;
  if (!check_frame(body, "hello", true, frame, error, tell_peer) || !check_identity(frame, error))
    return refuse(std::move(error), tell_peer);
  peer_ = std::move(*frame.name);
  peer_nonce_ = std::move(*frame.nonce);
  started_ = true;
  Step step;
  step.reply = frame_challenge(name_, nonce_,
                               handshake_proof(cookie_, true, peer_nonce_, nonce_, peer_, name_));
  return step;
}

SessionGate::Step CookieGate::on_proof(std::string_view body) {
  HandshakeFrame frame;
  std::string error;
  bool tell_peer = true;
  if (!check_frame(body, "proof", false, frame, error, tell_peer) ||
      !check_proof_field(frame, error)) {
    return refuse(std::move(error), tell_peer);
  }
  const std::string expected = handshake_proof(cookie_, false, peer_nonce_, nonce_, peer_, name_);
  if (!same_proof(*frame.proof, expected))
    return refuse("cookie mismatch");
  state_ = State::open;
  peer_open_ = peer_;
  Step step;
  step.state = State::open;
  return step;
}

SessionGate::Step CookieGate::on_challenge(std::string_view body) {
  HandshakeFrame frame;
  std::string error;
  bool tell_peer = true;
  if (!check_frame(body, "challenge", true, frame, error, tell_peer) ||
      !check_identity(frame, error) || !check_proof_field(frame, error)) {
    return refuse(std::move(error), tell_peer);
  }
  peer_ = std::move(*frame.name);
  peer_nonce_ = std::move(*frame.nonce);
  const std::string expected = handshake_proof(cookie_, true, nonce_, peer_nonce_, name_, peer_);
  if (!same_proof(*frame.proof, expected))
    return refuse("cookie mismatch");
  if (!expected_peer_.empty() && peer_ != expected_peer_) {
    return refuse("unexpected peer '" + sanitized(peer_) + "' (expected '" +
                  sanitized(expected_peer_) + "')");
  }
  state_ = State::open;
  peer_open_ = peer_;
  Step step;
  step.reply = frame_proof(handshake_proof(cookie_, false, nonce_, peer_nonce_, name_, peer_));
  step.state = State::open;
  return step;
}

}  // namespace distflow
