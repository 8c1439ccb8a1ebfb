# `cpack -G DEB` (in the build directory): two Debian packages from the install
# components, distflow_<version>_<arch>.deb ("runtime": binary, symlinks, man pages,
# completion, systemd units) and libdistflow-dev_<version>_<arch>.deb
# ("development": headers, libdistflow.a, CMake package files).
set(CPACK_PACKAGE_NAME distflow)
set(CPACK_PACKAGE_VENDOR distflow)
set(CPACK_PACKAGE_CONTACT "distflow maintainers <distflow@localhost>")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}/package")
set(CPACK_COMPONENTS_ALL runtime development)
set(CPACK_COMPONENT_DEVELOPMENT_DEPENDS runtime)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/distflow/distflow")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME distflow)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION net)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME libdistflow-dev)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
# The first line is the summary (CPACK_PACKAGE_DESCRIPTION_SUMMARY would replace
# both packages' summaries); an empty line separates paragraphs.
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
  "Erlang-inspired distributed messaging: port mapper, nodes, shell tools
One executable, distflow, busybox-style: a port mapper daemon (pmd, like epmd),
nodes that message each other by alias over persistent TCP connections
(node), shell tools to drive them from pipelines (send, watch), and
benchmarks (bench). With man pages, bash and zsh completion, and the systemd
units distflow-pmd.service and distflow-pmd.socket (installed, not enabled).")
set(CPACK_DEBIAN_DEVELOPMENT_DESCRIPTION
  "distflow C++ library (static) and headers
distflow::NodeRuntime, the node of the distflow messaging toolkit, as a C++20
library: find_package(distflow) and link distflow::core. The archive bundles
its Asio, spdlog and {fmt} parts: a program needs no other library.")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # The archive's objects need the C++ library of the compiler that built them.
  string(REGEX MATCH "^[0-9]+" gcc_major "${CMAKE_CXX_COMPILER_VERSION}")
  set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS "libstdc++-${gcc_major}-dev, libssl-dev (>= 3)")
endif()

# What the binary needs from the system (DISTFLOW_STATIC_LINK, CMakeLists.txt).
# Fully static: nothing to link, but glibc's NSS loads the system's libnss_* for
# host names, which must come from the glibc the binary was built with.
if(DISTFLOW_STATIC_LINK STREQUAL "full" AND NOT DISTFLOW_SANITIZE)
  execute_process(COMMAND getconf GNU_LIBC_VERSION OUTPUT_VARIABLE glibc
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(glibc MATCHES "^glibc ([0-9]+)\\.([0-9]+)")
    math(EXPR next_minor "${CMAKE_MATCH_2} + 1")
    set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS
        "libc6 (>= ${CMAKE_MATCH_1}.${CMAKE_MATCH_2}), libc6 (<< ${CMAKE_MATCH_1}.${next_minor})")
  endif()
  string(APPEND CPACK_DEBIAN_RUNTIME_DESCRIPTION "

The binary is statically linked; only host name lookups (glibc NSS) load
parts of the system's C library, hence the exact libc6 version.")
else()
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
endif()

# Maintainer scripts: systemd learns of the units; removal stops and disables them.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/packaging/debian/postinst"
    "${PROJECT_SOURCE_DIR}/packaging/debian/prerm"
    "${PROJECT_SOURCE_DIR}/packaging/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
