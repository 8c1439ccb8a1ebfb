#include "throwaway_pki.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "bench_child.hpp"
#include "errors.hpp"

namespace distflow {
namespace {

void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/openssl"};
  if (::access(argv[0].c_str(), X_OK) != 0)
    throw Error("cannot make throwaway certificates: no /usr/bin/openssl (install openssl)");
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult r = run_command(argv, std::chrono::seconds(30));
  if (r.code != 0)
    throw Error("openssl " + args[0] + " failed: " + r.output);
}

}  // namespace

ThrowawayPki::ThrowawayPki(const std::string& ca_name,
                           const std::function<void(const std::string& dir)>& before_create) {
  static int counter = 0;
  dir_ = (std::filesystem::temp_directory_path() /
          ("distflow-pki-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
             .string();
  if (before_create)
    before_create(dir_);
  std::filesystem::create_directories(dir_);
  ::chmod(dir_.c_str(), 0700);
  ca_ = dir_ + "/ca.pem";
  ca_key_ = dir_ + "/ca.key";
  try {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", ca_key_, "-out", ca_, "-days", "2", "-subj", "/CN=" + ca_name});
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw;
  }
}

ThrowawayPki::~ThrowawayPki() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

ThrowawayPki::Files ThrowawayPki::issue(const std::string& name, const std::string& extra_san,
                                        int days) {
  const std::string base = dir_ + "/" + name;
  const std::string ext = base + ".ext";
  std::ofstream(ext) << "subjectAltName=DNS:localhost,IP:127.0.0.1"
                     << (extra_san.empty() ? "" : "," + extra_san) << "\n";
  openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
           base + ".key", "-out", base + ".csr", "-subj", "/CN=" + name});
  if (days >= 0) {
    openssl({"x509", "-req", "-in", base + ".csr", "-CA", ca_, "-CAkey", ca_key_, "-CAcreateserial",
             "-out", base + ".pem", "-extfile", ext, "-days", std::to_string(days)});
  } else {
    // Expired long ago: only `openssl ca` takes explicit dates (OpenSSL 3.0).
    const std::string db = dir_ + "/ca-db";
    std::filesystem::create_directories(db);
    std::ofstream(db + "/index.txt", std::ios::app);
    if (!std::filesystem::exists(db + "/serial"))
      std::ofstream(db + "/serial") << "1000\n";
    std::ofstream(db + "/ca.cnf") << "[ca]\ndefault_ca=test\n[test]\ndatabase=" << db
                                  << "/index.txt\nnew_certs_dir=" << db << "\nserial=" << db
                                  << "/serial\ndefault_md=sha256\npolicy=any\n"
                                     "unique_subject=no\n[any]\ncommonName=supplied\n";
    openssl({"ca", "-batch", "-notext", "-config", db + "/ca.cnf", "-cert", ca_, "-keyfile",
             ca_key_, "-in", base + ".csr", "-out", base + ".pem", "-extfile", ext, "-startdate",
             "20000101000000Z", "-enddate", "20000102000000Z"});
  }
  ::chmod((base + ".key").c_str(), 0600);
  return {base + ".pem", base + ".key", ca_};
}

}  // namespace distflow
