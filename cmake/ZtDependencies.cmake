# Third-party libraries, all from Debian packages (tools/setup.sh installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(MPI REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
find_package(CapnProto REQUIRED)
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
# The coordinator's Prometheus endpoint (--metrics-port). Debian builds it as a shared library with
# TLS and compression on; the target's flags keep our view of its classes the same as the library's.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
# OpenBLAS must be the OpenMP build: our kernels run in OpenMP parallel regions, and a pthread
# OpenBLAS beside them leaves two thread pools spinning against each other (measured: 80% of a step
# in libgomp's spin-wait on 2 cores). Debian installs it beside the pthread one, so name it exactly.
find_library(ZT_OPENBLAS_LIBRARY NAMES openblas
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
find_path(ZT_OPENBLAS_INCLUDE cblas.h
  PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp /usr/include/openblas NO_DEFAULT_PATH)
if(NOT ZT_OPENBLAS_LIBRARY OR NOT ZT_OPENBLAS_INCLUDE)
  message(FATAL_ERROR "OpenMP OpenBLAS not found: install libopenblas-openmp-dev (tools/setup.sh does)")
endif()
add_library(zt_openblas INTERFACE)
target_link_libraries(zt_openblas INTERFACE ${ZT_OPENBLAS_LIBRARY})
target_include_directories(zt_openblas INTERFACE ${ZT_OPENBLAS_INCLUDE})
message(STATUS "zerotrain: OpenBLAS ${ZT_OPENBLAS_LIBRARY}")
