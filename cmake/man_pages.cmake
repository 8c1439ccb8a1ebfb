# Man pages, generated at build time from the --help texts by help2man: distflow.1
# and distflow-<mode>.1 for every mode, gzipped, installed to share/man/man1.
# Without help2man (Debian package help2man) there are none, and the build goes on.
find_program(HELP2MAN_EXECUTABLE help2man)
if(NOT HELP2MAN_EXECUTABLE)
  message(STATUS "help2man not found: no man pages (apt-get install help2man)")
  return()
endif()
find_program(GZIP_EXECUTABLE gzip)

# The NAME line of each page, in the order of modes/main.cpp's table.
set(distflow_man_name "Erlang-inspired distributed messaging: port mapper, nodes, shell tools")
set(distflow-pmd_man_name "run the distflow port mapper daemon, or administer one")
set(distflow-node_man_name "run a distflow node: messages out as NDJSON, stdin lines sent")
set(distflow-send_man_name "send JSON messages to a distflow node")
set(distflow-call_man_name "send a request to a distflow node and print its reply")
set(distflow-stats_man_name "print a running distflow node's counters")
set(distflow-watch_man_name "print the registered distflow peers, then every join and leave")
set(distflow-bench_man_name "measure distflow's mailbox, throughput, latency and PMD speed")

set(distflow_man_dir "${CMAKE_CURRENT_BINARY_DIR}/man")
set(distflow_man_programs distflow)
foreach(mode IN LISTS DISTFLOW_MODES)
  list(APPEND distflow_man_programs "distflow-${mode}")
endforeach()
set(distflow_man_pages "")
foreach(program IN LISTS distflow_man_programs)
  if(NOT DEFINED ${program}_man_name)
    message(FATAL_ERROR "cmake/man_pages.cmake: no NAME line for ${program}")
  endif()
  # SEE ALSO: the other pages.
  set(see_also "")
  foreach(other IN LISTS distflow_man_programs)
    if(NOT other STREQUAL program)
      string(APPEND see_also ".BR ${other} (1),\n")
    endif()
  endforeach()
  string(REGEX REPLACE ",\n$" "\n" see_also "${see_also}")
  file(CONFIGURE OUTPUT "${distflow_man_dir}/${program}.h2m"
       CONTENT "[SEE ALSO]\n${see_also}" @ONLY)

  set(page "${distflow_man_dir}/${program}.1")
  # The --help text shows flag defaults: DISTFLOW_PMD_PORT must not leak into them.
  set(commands COMMAND "${CMAKE_COMMAND}" -E env --unset=DISTFLOW_PMD_PORT --unset=SPDLOG_LEVEL
    "${HELP2MAN_EXECUTABLE}" --no-info --section=1 "--name=${${program}_man_name}"
    "--version-string=${program} ${PROJECT_VERSION}" "--include=${distflow_man_dir}/${program}.h2m"
    "--output=${page}" "$<TARGET_FILE_DIR:distflow>/${program}")
  if(GZIP_EXECUTABLE)
    list(APPEND commands COMMAND "${GZIP_EXECUTABLE}" -9nf "${page}")
    string(APPEND page ".gz")
  endif()
  add_custom_command(OUTPUT "${page}" ${commands}
    DEPENDS distflow "${distflow_man_dir}/${program}.h2m"
    COMMENT "Generating man page ${program}.1" VERBATIM)
  list(APPEND distflow_man_pages "${page}")
endforeach()
add_custom_target(distflow_man ALL DEPENDS ${distflow_man_pages})
install(FILES ${distflow_man_pages} DESTINATION "${CMAKE_INSTALL_MANDIR}/man1" COMPONENT runtime)
