# cmake -P script: a six-second saga-bench --soak whose JSON must hold the
# store samples, say whether each store plateaued, and show the participants'
# inbox and ledger expiry at work (a 2 s horizon in a 6 s run). No size is asserted: the
# figures must exist and the run be consistent.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
execute_process(COMMAND ${BENCH} --soak 0.1 --rate 300 --sample-seconds 1 --retention-ms 500
                        --dedup-horizon-ms 2000 --sync off --baselines off
                        --json ${WORK_DIR}/soak.json --dir ${WORK_DIR}/stores
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "saga-bench --soak failed (${rc}):\n${err}")
endif()
file(READ ${WORK_DIR}/soak.json json)
string(JSON points LENGTH "${json}" points)
string(JSON consistent GET "${json}" points 0 consistent)
if(NOT points EQUAL 1 OR NOT consistent STREQUAL "ON")
  message(FATAL_ERROR "expected one consistent point, got ${points} (consistent: ${consistent})")
endif()
string(JSON samples LENGTH "${json}" points 0 soak samples)
if(samples LESS 5)
  message(FATAL_ERROR "expected a sample a second for 6 s, got ${samples}")
endif()
math(EXPR last "${samples} - 1")
foreach(store orchestrator inventory payment)
  string(JSON keys GET "${json}" points 0 soak samples ${last} ${store} keys)
  string(JSON disk GET "${json}" points 0 soak samples ${last} ${store} disk_bytes)
  string(JSON plateau GET "${json}" points 0 soak plateau ${store}_keys)
  if(keys LESS_EQUAL 0 OR disk LESS_EQUAL 0 OR NOT plateau MATCHES "^(ON|OFF)$")
    message(FATAL_ERROR "${store}: keys ${keys}, disk ${disk}, plateau ${plateau}")
  endif()
endforeach()
string(JSON expired GET "${json}" points 0 soak samples ${last} inventory inbox_expired)
if(expired LESS_EQUAL 0)
  message(FATAL_ERROR "the inventory's inbox expired nothing past a 2 s horizon in 6 s")
endif()
# The participants keep their per-saga ledger for the horizon too.
string(JSON ledger GET "${json}" points 0 soak samples ${last} payment state_expired)
if(ledger LESS_EQUAL 0)
  message(FATAL_ERROR "the payment's ledger expired nothing past a 2 s horizon in 6 s")
endif()
message(STATUS "saga-bench soak smoke: ${samples} samples, ${expired} inbox records and "
               "${ledger} payment ledger keys expired")
