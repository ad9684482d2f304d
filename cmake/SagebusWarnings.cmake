# sagebus_set_warnings(target): the project's warning set. Every first-party target calls
# it; generated code does not. Sanitizers (SAGEBUS_SANITIZE) and the fuzzer's
# instrumentation (SAGEBUS_FUZZ) apply to every target, generated code included.
function(sagebus_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                                           -Wnon-virtual-dtor -Wold-style-cast)
  if(SAGEBUS_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

if(SAGEBUS_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(SAGEBUS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SAGEBUS_FUZZ needs clang (libFuzzer): configure a fresh build "
                        "directory with CC=clang CXX=clang++")
  endif()
  # Coverage instrumentation everywhere; only sagebus-fuzz links libFuzzer itself
  # (-fsanitize=fuzzer, in tests/fuzz).
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
