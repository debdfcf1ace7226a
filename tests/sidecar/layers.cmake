# Checks that the sidecar's includes point down its layers (ARCHITECTURE.md,
# "Layers"): a file may include its own layer and the layers below it, never one
# above it, nor a sibling on its own floor.
#
#   cmake -DSRC=<dir> -P tests/sidecar/layers.cmake
#
# Floors, lowest first (a file's layer is its first directory under SRC):
#
#   0 util         logging helpers, hex
#   1 model        tables, offsets, shape and subset requests, batches
#   2 protocol     wire encoding (pure)
#   3 db           the only code that speaks SQL
#   4 config       config.hpp / config.cpp: the settings of shapesyncd. They sit
#                  just above db (nothing below shapes reads a setting: db gets
#                  what it needs as arguments) and below everything that does.
#   5 shapes       the store, ShapeService
#   5 writes       WriteService (POST /v1/mutations into the database); a
#                  sibling of shapes: neither includes the other
#   6 auth metrics siblings: neither includes the other
#   7 http         routing, endpoints
#   8 net          sockets, sessions
#   9 main         main.cpp (wiring); asio_src.cpp (Asio/Beast compiled once) is
#                  floor 0: it includes no project header
#
# A file in a directory not listed here fails the check until it is given a
# floor. Every violation is printed as `<file>: includes "<header>" (<layer>
# may not include <layer>)`; the script fails when there is at least one.
cmake_minimum_required(VERSION 3.25)

if(NOT SRC)
  message(FATAL_ERROR "usage: cmake -DSRC=<sidecar/src> -P layers.cmake")
endif()

set(_floor_util 0)
set(_floor_asio_src 0)
set(_floor_model 1)
set(_floor_protocol 2)
set(_floor_db 3)
set(_floor_config 4)
set(_floor_shapes 5)
set(_floor_writes 5)
set(_floor_auth 6)
set(_floor_metrics 6)
set(_floor_http 7)
set(_floor_net 8)
set(_floor_main 9)

# The layer of a path relative to SRC ("db/pg.hpp" -> db, "config.hpp" -> config).
function(_layer_of rel out)
  if(rel MATCHES "^([^/]+)/")
    set(${out} ${CMAKE_MATCH_1} PARENT_SCOPE)
  else()
    get_filename_component(_stem ${rel} NAME_WE)
    set(${out} ${_stem} PARENT_SCOPE)
  endif()
endfunction()

file(GLOB_RECURSE _files RELATIVE ${SRC} ${SRC}/*.hpp ${SRC}/*.cpp ${SRC}/*.h ${SRC}/*.cc)
list(SORT _files)
set(_violations 0)
set(_checked 0)
foreach(_f ${_files})
  _layer_of(${_f} _from)
  if(NOT DEFINED _floor_${_from})
    message("${_f}: layer '${_from}' has no floor in tests/sidecar/layers.cmake")
    math(EXPR _violations "${_violations} + 1")
    continue()
  endif()
  file(STRINGS ${SRC}/${_f} _lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(_line ${_lines})
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" _inc "${_line}")
    math(EXPR _checked "${_checked} + 1")
    _layer_of(${_inc} _to)
    if(NOT DEFINED _floor_${_to})
      message("${_f}: includes \"${_inc}\" (layer '${_to}' has no floor)")
      math(EXPR _violations "${_violations} + 1")
    elseif(_to STREQUAL _from)
      # its own layer
    elseif(_floor_${_to} GREATER_EQUAL _floor_${_from})
      message("${_f}: includes \"${_inc}\" (${_from} may not include ${_to})")
      math(EXPR _violations "${_violations} + 1")
    endif()
  endforeach()
endforeach()

list(LENGTH _files _n)
if(_violations GREATER 0)
  message(FATAL_ERROR "${_violations} include(s) against the layers in ${SRC}")
endif()
message("layers: ${_n} files, ${_checked} project includes, all pointing down")
