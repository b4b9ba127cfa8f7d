# cmake -P script: README.md shows examples/quickstart/main.cc whole, as it is
# (the README's first example is the file CI builds and runs, never a copy
# that drifts from it).
file(READ ${README} readme)
file(READ ${SOURCE} source)
string(FIND "${readme}" "```cpp\n${source}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${README} does not show ${SOURCE} as it is: copy the file into its "
                      "```cpp block under \"A first saga\"")
endif()
