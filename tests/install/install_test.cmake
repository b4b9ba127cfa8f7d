# cmake -P script: install, then configure/build/run each example against the
# installed package only (no source tree on its include or prefix paths).
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# example name;program;what its output must contain
set(examples
  "quickstart|saga_quickstart|booking of 300: COMPLETED.*booking of 5000: COMPENSATED\n  reserve: COMPENSATED\n  pay: FAILED \\(declined\\)")

run(${CMAKE_COMMAND} --install ${SAGA_BINARY_DIR} --prefix ${prefix})
foreach(entry IN LISTS examples)
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 program)
  list(GET parts 2 expected)
  set(build ${WORK_DIR}/build-${name})
  run(${CMAKE_COMMAND} -S ${SAGA_EXAMPLES_DIR}/${name} -B ${build} -G ${GENERATOR}
      -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
  run(${CMAKE_COMMAND} --build ${build})
  run(${build}/${program} ${WORK_DIR}/data-${name})
  if(NOT last_output MATCHES "${expected}")
    message(FATAL_ERROR "installed example ${name} printed something unexpected:\n${last_output}")
  endif()
  message(STATUS "${name}:\n${last_output}")
endforeach()
