# Install-time script (install(SCRIPT), cmake/install.cmake): installs the systemd
# units with ExecStart naming the binary's final path. CMAKE_INSTALL_PREFIX is the
# real prefix here: `cmake --install --prefix P` sets it, and cpack installs with
# the package's prefix (/usr) under DESTDIR. file(INSTALL) honours DESTDIR.
# In: distflow_unit_sources, distflow_unit_staging, distflow_unit_dir, distflow_bindir.
set(DISTFLOW_BINARY "${CMAKE_INSTALL_PREFIX}/${distflow_bindir}/distflow")
# One staging directory per destination: installs into two prefixes may run at once.
string(MD5 destination "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}")
set(staging "${distflow_unit_staging}/${destination}")
file(GLOB templates "${distflow_unit_sources}/*.in")
set(units "")
foreach(template IN LISTS templates)
  get_filename_component(name "${template}" NAME_WLE)
  configure_file("${template}" "${staging}/${name}" @ONLY)
  list(APPEND units "${staging}/${name}")
endforeach()
file(INSTALL ${units} DESTINATION "${CMAKE_INSTALL_PREFIX}/${distflow_unit_dir}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(REMOVE_RECURSE "${staging}")
