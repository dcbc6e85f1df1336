# fuzz.cmake -- libFuzzer targets (configure with -DIMG_FUZZ=ON and CC=clang).
#
# img_fuzz_target(name): builds tests/fuzz/<name>.c (name = "fuzz-<x>") against
# img_static with -fsanitize=fuzzer into build-fuzz/fuzz-<x>; scripts/test.sh
# runs every build-fuzz/fuzz-* binary with the seed corpus fixtures/fuzz/<x>/.
# Adding a target: one tests/fuzz/fuzz-<x>.c, one line below, a corpus dir.
# Run: build/fuzz-<x> -max_total_time=60 fixtures/fuzz/<x>/

function(img_fuzz_target name)
  if(NOT EXISTS ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}.c)
    message(WARNING "tests/fuzz/${name}.c is missing: fuzz target skipped")
    return()
  endif()
  add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}.c)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/libimg/src)
  target_compile_definitions(${name} PRIVATE IMG_BUILDING_LIBIMG)
  target_link_libraries(${name} PRIVATE img_static)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
endfunction()

img_fuzz_target(fuzz-tar)
img_fuzz_target(fuzz-firmware)
img_fuzz_target(fuzz-manifest)
img_fuzz_target(fuzz-qcow2)
img_fuzz_target(fuzz-vdisk)
img_fuzz_target(fuzz-closure)
img_fuzz_target(fuzz-disk)
img_fuzz_target(fuzz-bootspec)
