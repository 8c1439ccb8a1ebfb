#pragma once

// `distflow bench throughput --remote` (issue 12): what crossing hosts costs, and
// what the cookie and TLS add to it. Two simulated hosts (sim_hosts.hpp: network
// namespaces at 10.203.0.1 and 10.203.0.2, else 127.0.0.2 and 127.0.0.3), each
// with a PMD per security mode, bound on 127.0.0.1 and its own address. A receiver
// worker on host A, a sender worker on host B sending to `alias@A:pmdport`; the
// sender resolves through A's PMD and connects (handshakes included) before its
// clock starts, so the figures are the steady stream. Every repetition runs plain
// (--insecure), cookie and TLS (1.3, both sides verified), in alternating order;
// the report gives each median and the medians of the per-repetition ratios
// (targets: cookie >= 0.95x plain, TLS >= 0.7x plain).
//
// The cookie and the certificates are throwaway, made in a private temp dir
// (throwaway_pki.hpp) removed at the end; the namespaces are removed on every exit
// path, and checked (namespace, address on eth0 and not outside) before traffic.

#include <iosfwd>

#include "bench_runner.hpp"

namespace distflow {

/// Runs the remote throughput bench (config.msgs, size, reps, timeout); writes the
/// banner and the report to `out`, progress to `err`. Throws distflow::Error.
BenchReport run_remote_throughput_bench(const ThroughputBenchConfig& config, std::ostream& out,
                                        std::ostream& err);

}  // namespace distflow
