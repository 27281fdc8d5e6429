# Which room may include which: the build runs this over every source (target check_layers) and
# fails on a quoted include that crosses a room's line, or on LibTorch in a room that must stay
# without it. The README's layout table states the same rules.
#
#   cmake -DROOT=<source dir> -P scripts/check_layers.cmake
#
# A room is a folder; a file belongs to the longest room prefix of its path. Each room lists the
# rooms its files may include (itself always). tests/, benchmarks/ and fuzz/ may include anything.
# runtime/backends/cuda/ is private to the registry; runtime/backends/cpu/ also holds the host's
# thread and allocator controls, which every room that computes on the host uses.

cmake_minimum_required(VERSION 3.18)

if(NOT ROOT)
  message(FATAL_ERROR "check_layers: pass -DROOT=<source dir>")
endif()

# room | rooms it may use
set(rules
  "memory|"
  "scheduler|memory"
  "stages|memory"
  "runtime/config|memory scheduler runtime/data"
  "runtime/data|memory"
  "runtime/backends/cuda|memory scheduler runtime/backends/backend.h stages/weight_stream.h"
  "runtime/backends/cpu|memory scheduler runtime/backends/backend.h"
  "runtime/backends|memory scheduler runtime/backends/cpu runtime/backends/cuda stages/weight_stream.h"
  "runtime/io|memory scheduler runtime/config runtime/data"
  "runtime/dist|memory runtime/data"
  "runtime/train|memory scheduler stages runtime/config runtime/data runtime/backends runtime/backends/cpu runtime/io runtime/dist"
  "runtime/tools|memory scheduler stages runtime/config runtime/data runtime/backends runtime/backends/cpu runtime/io runtime/dist runtime/train"
  "runtime/cli|memory scheduler stages runtime/config runtime/data runtime/backends runtime/backends/cpu runtime/io runtime/dist runtime/train runtime/tools"
)
# Rooms that compile without LibTorch (DESIGN.md: the pure core builds in seconds).
set(no_libtorch memory scheduler runtime/config runtime/data)

set(rooms "")
foreach(rule ${rules})
  string(REPLACE "|" ";" parts "${rule}")
  list(GET parts 0 room)
  list(APPEND rooms ${room})
endforeach()

# The room of a path relative to ROOT (the longest matching prefix), or "" for none.
function(room_of path out)
  set(best "")
  foreach(room ${rooms})
    string(LENGTH "${room}" n)
    string(SUBSTRING "${path}" 0 ${n} head)
    string(LENGTH "${path}" len)
    if(head STREQUAL room AND len GREATER n)
      string(SUBSTRING "${path}" ${n} 1 sep)
      string(LENGTH "${best}" best_n)
      if(sep STREQUAL "/" AND n GREATER best_n)
        set(best "${room}")
      endif()
    endif()
  endforeach()
  set(${out} "${best}" PARENT_SCOPE)
endfunction()

set(violations "")
foreach(rule ${rules})
  string(REPLACE "|" ";" parts "${rule}")
  list(GET parts 0 room)
  list(LENGTH parts count)
  set(allowed "")
  if(count GREATER 1)
    list(GET parts 1 allowed_text)
    string(REPLACE " " ";" allowed "${allowed_text}")
  endif()
  file(GLOB_RECURSE sources RELATIVE "${ROOT}" "${ROOT}/${room}/*.h" "${ROOT}/${room}/*.cpp")
  foreach(source ${sources})
    room_of("${source}" own)
    if(NOT own STREQUAL room)
      continue()  # a nested room's file: checked under its own rule
    endif()
    file(STRINGS "${ROOT}/${source}" lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line ${lines})
      if(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
        set(target "${CMAKE_MATCH_1}")
        room_of("${target}" target_room)
        if(target_room STREQUAL "")
          continue()  # same folder, a generated file or a test helper
        endif()
        if(target_room STREQUAL room)
          continue()
        endif()
        set(ok FALSE)
        foreach(a ${allowed})
          # An entry is a room, or one header of a room (runtime/backends/backend.h).
          if(target_room STREQUAL a OR target STREQUAL a)
            set(ok TRUE)
          endif()
        endforeach()
        if(NOT ok)
          string(APPEND violations "  ${source}: includes \"${target}\" (room ${target_room}); ${room} may use: ${allowed}\n")
        endif()
      elseif(line MATCHES "#[ \t]*include[ \t]*<(torch|ATen|c10)/")
        list(FIND no_libtorch "${room}" index)
        if(NOT index EQUAL -1)
          string(APPEND violations "  ${source}: includes LibTorch (${line}); ${room} builds without it\n")
        endif()
      endif()
    endforeach()
  endforeach()
endforeach()

if(violations)
  message(FATAL_ERROR "pipetrain layering: includes across the rooms' lines (scripts/check_layers.cmake):\n${violations}")
endif()
