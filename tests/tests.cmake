# tests.cmake -- every test, registered with CTest.
#
# Unit tests: tests/unit/test-<module>.c, one check suite each; every
# tcase_create("name") in the file becomes its own CTest case "<module>/<name>"
# (run alone through CK_RUN_CASE), so `ctest -R qcow2` works.
# Shell tests: tests/<area>/<name>.sh run with the tools' paths in the
# environment; exit 77 = skipped (a program is missing).

function(img_unit_test module)
  set(src ${CMAKE_SOURCE_DIR}/tests/unit/test-${module}.c)
  add_executable(test-${module} ${src} ${CMAKE_SOURCE_DIR}/tests/unit/check-main.c
                 ${CMAKE_SOURCE_DIR}/tests/unit/testutil.c)
  target_include_directories(test-${module} PRIVATE ${CMAKE_SOURCE_DIR}/libimg/src
                             ${CMAKE_SOURCE_DIR}/tests/unit)
  target_compile_definitions(test-${module} PRIVATE IMG_BUILDING_LIBIMG
                             IMG_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  target_link_libraries(test-${module} PRIVATE img_static PkgConfig::CHECK)
  file(STRINGS ${src} lines REGEX "tcase_create\\(\"[^\"]+\"\\)")
  foreach(line ${lines})
    string(REGEX MATCH "tcase_create\\(\"([^\"]+)\"\\)" _ "${line}")
    set(tc ${CMAKE_MATCH_1})
    add_test(NAME ${module}/${tc} COMMAND test-${module})
    set_tests_properties(${module}/${tc} PROPERTIES
      ENVIRONMENT "CK_RUN_CASE=${tc};CK_DEFAULT_TIMEOUT=120;IMG_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp"
      LABELS "unit;${module}" SKIP_RETURN_CODE 77)
  endforeach()
endfunction()

function(img_shell_test area name)
  cmake_parse_arguments(T "" "TIMEOUT" "LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_test(NAME ${area}/${name}
           COMMAND bash ${CMAKE_SOURCE_DIR}/tests/${area}/${name}.sh)
  set_tests_properties(${area}/${name} PROPERTIES
    ENVIRONMENT "MKVMIMAGE=$<TARGET_FILE:mkvmimage>;VMLAUNCH=$<TARGET_FILE:vmlaunch>;SRCDIR=${CMAKE_SOURCE_DIR};BUILDDIR=${CMAKE_BINARY_DIR};TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp"
    LABELS "${area};${T_LABELS}" SKIP_RETURN_CODE 77 TIMEOUT ${T_TIMEOUT})
endfunction()

if(NOT CHECK_FOUND)
  message(WARNING "check not found: unit tests are not built (run scripts/setup.sh)")
else()
  # Unit tests, one line per module.
  img_unit_test(context)
  img_unit_test(repro)
  img_unit_test(dev)
  img_unit_test(dio)
  img_unit_test(tree)
  img_unit_test(closure)
  img_unit_test(bootspec)
  img_unit_test(ext4)
  img_unit_test(erofs)
  img_unit_test(verity)
  img_unit_test(erofs-compress)
  img_unit_test(tar)
  img_unit_test(disk)
  img_unit_test(fat32)
  img_unit_test(qcow2)
  img_unit_test(vdisk)
  img_unit_test(vm)
endif()

# Integration tests: run the tools, validate with programs we did not write.
img_shell_test(integration empty)
img_shell_test(integration cli-docs)
img_shell_test(integration vdisk)
# partitioned system disks (--efi, --bios, --hybrid): sgdisk/sfdisk, fsck.fat, mtools, e2fsck.
img_shell_test(integration disk-efi)
img_shell_test(integration disk-layouts)
img_shell_test(integration disk-uki)
img_shell_test(integration disk-repro)
img_shell_test(integration disk-verity)
img_shell_test(integration disk-tar)
img_shell_test(integration disk-bootspec)
img_shell_test(integration disk-boot-uki LABELS boot TIMEOUT 600)
img_shell_test(integration store-roundtrip)
img_shell_test(integration store-hostile)
img_shell_test(integration store-repro)
img_shell_test(integration store-sparse)
img_shell_test(integration store-verity)
img_shell_test(integration output-not-input)
# the manifest's sha256 against sha256sum, every mode and format
img_shell_test(integration manifest-sha256)
img_shell_test(integration store-policy)
img_shell_test(integration store-compress)
img_shell_test(integration interrupt)
img_shell_test(integration vm-qemu-accepts LABELS vm)
img_shell_test(integration vm-bad-input LABELS vm)
img_shell_test(integration vm-supervise LABELS vm)
img_shell_test(integration vm-state LABELS vm)
img_shell_test(integration vm-own-paths LABELS vm)
img_shell_test(integration vm-state-hostile LABELS vm)
img_shell_test(integration vm-vlan LABELS vm)
img_shell_test(integration vm-system-kernel LABELS vm)
# ext4 root file system (default mode): tree, bad closures, reproducibility.
img_shell_test(integration root-tree)
img_shell_test(integration root-bad)
img_shell_test(integration root-repro)
img_shell_test(integration root-tar)

# qcow2: a test-only driver of the devices, and the checks against qemu-img/qemu-io.
add_executable(qcow2-tool ${CMAKE_SOURCE_DIR}/tests/helpers/qcow2-tool.c)
target_link_libraries(qcow2-tool PRIVATE img_static)
img_shell_test(integration qcow2-write)
img_shell_test(integration qcow2-read)
img_shell_test(integration qcow2-overlay)

# The bad-input corpus (fixtures/bad/*.case); also runs in the ASan build.
img_shell_test(bad corpus LABELS bad TIMEOUT 900)
img_shell_test(integration install)
img_shell_test(integration exports)
img_shell_test(integration layers)
img_shell_test(faults faults)

# Boot tests: the fixture closure (fixtures/boot) booted under QEMU (TCG).
img_shell_test(boot fixture TIMEOUT 600)
img_shell_test(boot efi TIMEOUT 600)
img_shell_test(boot direct TIMEOUT 600)
img_shell_test(boot verity TIMEOUT 600)
img_shell_test(boot bios TIMEOUT 600)
img_shell_test(boot tpm TIMEOUT 600)
img_shell_test(boot forward TIMEOUT 600)
img_shell_test(boot sigterm TIMEOUT 600)
img_shell_test(boot uki TIMEOUT 600)
img_shell_test(boot scsi TIMEOUT 600)
img_shell_test(boot hybrid TIMEOUT 600)
img_shell_test(boot specialisation TIMEOUT 900)
img_shell_test(boot formats TIMEOUT 900)
img_shell_test(boot system TIMEOUT 900)

# Reproducibility: every output kind built under three sets of conditions.
img_shell_test(repro repro TIMEOUT 900)
# The bytes of every output kind, against recorded hashes (docs/memory.md).
img_shell_test(repro golden)
img_shell_test(integration vm-accel)
