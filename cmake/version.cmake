# `distflow --version`: "distflow 0.1.0 (git <describe>, g++ 12.2.0, RelWithDebInfo)".
# build_info.cpp is rewritten at every build when `git describe --always --dirty`
# changes (cmake/build_info.cmake); it is compiled outside the modes' unity
# translation unit, so a new commit recompiles one small file and relinks.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(distflow_compiler "g++ ${CMAKE_CXX_COMPILER_VERSION}")
elseif(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  set(distflow_compiler "clang++ ${CMAKE_CXX_COMPILER_VERSION}")
else()
  set(distflow_compiler "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}")
endif()
set(distflow_build_info_cpp "${CMAKE_CURRENT_BINARY_DIR}/generated/build_info.cpp")
add_custom_target(distflow_build_info
  COMMAND "${CMAKE_COMMAND}" "-DSOURCE_DIR=${PROJECT_SOURCE_DIR}"
          "-DOUTPUT=${distflow_build_info_cpp}" "-DCOMPILER=${distflow_compiler}"
          "-DBUILD_TYPE=$<CONFIG>" -P "${CMAKE_CURRENT_LIST_DIR}/build_info.cmake"
  BYPRODUCTS "${distflow_build_info_cpp}"
  VERBATIM)
target_sources(distflow PRIVATE "${distflow_build_info_cpp}")
set_source_files_properties("${distflow_build_info_cpp}" PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
target_include_directories(distflow PRIVATE "${PROJECT_SOURCE_DIR}/modes")
add_dependencies(distflow distflow_build_info)
