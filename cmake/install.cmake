# `cmake --install`: the distflow binary (and its distflow-<mode> symlinks), man
# pages, shell completion, systemd units, and for C++ users the public headers,
# one static library and exported CMake targets:
#
#   find_package(distflow REQUIRED)
#   target_link_libraries(app PRIVATE distflow::core)
#
# Components: "runtime" (the distflow .deb) and "development" (libdistflow-dev).
# Included from the top-level CMakeLists.txt once the distflow and
# distflow_core targets exist.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

option(DISTFLOW_INSTALL_MODE_LINKS "Install distflow-<mode> symlinks next to distflow" ON)
set(DISTFLOW_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where systemd units go, relative to the install prefix")
set(DISTFLOW_ZSH_COMPLETION_DIR "${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions" CACHE STRING
    "Where the zsh completion goes, relative to the install prefix")

# The modes of modes/main.cpp's table: one symlink, man page and completion each.
set(DISTFLOW_MODES pmd node send call stats watch bench)

# ---- public headers -------------------------------------------------------------
# The library API's entry headers. They and every project header they include,
# transitively, are installed flat under include/distflow/ (they include each other
# as "framing.hpp"); every other header in src/ stays private. errors.hpp:
# distflow::Error, which NodeRuntime::start() and send_sync() throw.
set(DISTFLOW_PUBLIC_HEADERS node_runtime.hpp errors.hpp)

# Sets `out` to the absolute paths of `roots` (names in src/) and of every project
# header they include, transitively. The installed package carries no third-party
# headers or include paths: a public header that needs one would compile here and
# break in every consumer, so that is a configure error.
function(distflow_public_header_closure out)
  set(found "")
  set(pending ${ARGN})
  while(pending)
    list(POP_FRONT pending header)
    set(path "${PROJECT_SOURCE_DIR}/src/${header}")
    if(path IN_LIST found)
      continue()
    endif()
    if(NOT EXISTS "${path}")
      message(FATAL_ERROR "public header src/${header} does not exist (DISTFLOW_PUBLIC_HEADERS)")
    endif()
    list(APPEND found "${path}")
    file(STRINGS "${path}" includes REGEX "^[ \t]*#[ \t]*include")
    foreach(line IN LISTS includes)
      if(line MATCHES "include[ \t]*\"([^\"]+)\"")
        list(APPEND pending "${CMAKE_MATCH_1}")
      elseif(line MATCHES "include[ \t]*<((asio|spdlog|fmt|nlohmann|CLI|simdjson)[/.][^>]*)>")
        message(FATAL_ERROR "public header src/${header} includes <${CMAKE_MATCH_1}>, which the "
                            "installed distflow::core does not provide (cmake/install.cmake)")
      endif()
    endforeach()
  endwhile()
  set(${out} "${found}" PARENT_SCOPE)
endfunction()

distflow_public_header_closure(distflow_public_header_paths ${DISTFLOW_PUBLIC_HEADERS})
# An include added to a public header changes the list: configure again then.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${distflow_public_header_paths})
install(FILES ${distflow_public_header_paths}
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/distflow" COMPONENT development)

# ---- distflow::core: one archive a consumer links with Threads and OpenSSL -------
# distflow_core's own archive needs distflow_asio's and distflow_log's (Asio, spdlog
# and {fmt} compiled from Debian's headers, third_party/). The installed library is
# all three archives' objects in one (no recompilation), so a consumer needs no Asio,
# spdlog, fmt or nlohmann_json package, and sees none of their macros.
add_library(distflow_core_package STATIC
  $<TARGET_OBJECTS:distflow_core> $<TARGET_OBJECTS:distflow_asio> $<TARGET_OBJECTS:distflow_log>)
set_target_properties(distflow_core_package PROPERTIES
  OUTPUT_NAME distflow EXPORT_NAME core LINKER_LANGUAGE CXX
  ARCHIVE_OUTPUT_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}/package")
target_include_directories(distflow_core_package INTERFACE
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(distflow_core_package INTERFACE OpenSSL::SSL OpenSSL::Crypto Threads::Threads
                      ${CMAKE_DL_LIBS})
target_compile_features(distflow_core_package INTERFACE cxx_std_20)
if(DISTFLOW_SANITIZE)
  # Instrumented objects need the sanitizer runtime in whatever links them.
  target_link_options(distflow_core_package INTERFACE -fsanitize=${DISTFLOW_SANITIZE})
endif()
# The same name inside this build tree (add_subdirectory / FetchContent users).
add_library(distflow::core ALIAS distflow_core)

install(TARGETS distflow_core_package EXPORT distflow_targets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT development)
# CMake strips executables on --strip / CPACK_STRIP_FILES, never archives: debug
# sections are 85 % of this one.
install(CODE "
  if(CMAKE_INSTALL_DO_STRIP)
    execute_process(COMMAND \"${CMAKE_STRIP}\" --strip-debug --enable-deterministic-archives
      \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/$<TARGET_FILE_NAME:distflow_core_package>\"
      COMMAND_ERROR_IS_FATAL ANY)
  endif()" COMPONENT development)

# ---- the executable ------------------------------------------------------------
# Exported as distflow::distflow too: a program that lets its node auto-start a PMD
# sets NodeOptions::executable to $<TARGET_FILE:distflow::distflow>.
install(TARGETS distflow EXPORT distflow_targets
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime)

# distflow-<mode> -> distflow, beside the built binary: help2man runs them
# (cmake/man_pages.cmake), and install copies them as symlinks.
foreach(mode IN LISTS DISTFLOW_MODES)
  add_custom_command(TARGET distflow POST_BUILD
    COMMAND "${CMAKE_COMMAND}" -E create_symlink distflow "$<TARGET_FILE_DIR:distflow>/distflow-${mode}"
    VERBATIM)
  if(DISTFLOW_INSTALL_MODE_LINKS)
    install(FILES "$<TARGET_FILE_DIR:distflow>/distflow-${mode}"
            DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime)
  endif()
endforeach()

# ---- CMake package files ----------------------------------------------------------
set(distflow_cmake_dir "${CMAKE_INSTALL_LIBDIR}/cmake/distflow")
install(EXPORT distflow_targets NAMESPACE distflow:: FILE distflow-targets.cmake
        DESTINATION "${distflow_cmake_dir}" COMPONENT development)
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/distflow-config.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/package/distflow-config.cmake"
  INSTALL_DESTINATION "${distflow_cmake_dir}")
# 0.x: a minor release may change the API.
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/package/distflow-config-version.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/package/distflow-config.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/package/distflow-config-version.cmake"
        DESTINATION "${distflow_cmake_dir}" COMPONENT development)

# ---- shell completion -----------------------------------------------------------
set(distflow_packaging "${PROJECT_SOURCE_DIR}/packaging")
install(FILES "${distflow_packaging}/completion/distflow.bash"
        DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions"
        RENAME distflow COMPONENT runtime)
if(DISTFLOW_INSTALL_MODE_LINKS)
  # bash-completion loads a command's completion from a file named after it.
  file(MAKE_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}/package/completion")
  foreach(mode IN LISTS DISTFLOW_MODES)
    file(CREATE_LINK distflow "${CMAKE_CURRENT_BINARY_DIR}/package/completion/distflow-${mode}"
         SYMBOLIC)
    install(FILES "${CMAKE_CURRENT_BINARY_DIR}/package/completion/distflow-${mode}"
            DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions" COMPONENT runtime)
  endforeach()
endif()
install(FILES "${distflow_packaging}/completion/_distflow"
        DESTINATION "${DISTFLOW_ZSH_COMPLETION_DIR}" COMPONENT runtime)

# ---- systemd units --------------------------------------------------------------
# ExecStart names the binary's final path, known only at install time
# (`cmake --install --prefix P`; cpack installs with the prefix /usr under DESTDIR).
install(CODE "
  set(distflow_unit_sources \"${distflow_packaging}/systemd\")
  set(distflow_unit_staging \"${CMAKE_CURRENT_BINARY_DIR}/package/systemd\")
  set(distflow_unit_dir \"${DISTFLOW_SYSTEMD_UNIT_DIR}\")
  set(distflow_bindir \"${CMAKE_INSTALL_BINDIR}\")" COMPONENT runtime)
install(SCRIPT "${CMAKE_CURRENT_LIST_DIR}/install_units.cmake" COMPONENT runtime)

include("${CMAKE_CURRENT_LIST_DIR}/man_pages.cmake")
include("${CMAKE_CURRENT_LIST_DIR}/package.cmake")
