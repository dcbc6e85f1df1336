# libimg-pc.cmake -- run by `cmake --install`: writes libimg.pc for the prefix
# being installed to (cmake --install --prefix X), not the one configured.
# The install rules set IMG_PC_IN, IMG_PC_OUT, IMG_VERSION, IMG_LIBDIR and
# IMG_INCLUDEDIR (GNUInstallDirs' values, relative to the prefix or absolute).
foreach(v LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${IMG_${v}}")
    set(IMG_PC_${v} "${IMG_${v}}")
  else()
    set(IMG_PC_${v} "\${prefix}/${IMG_${v}}")
  endif()
endforeach()
set(IMG_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
configure_file("${IMG_PC_IN}" "${IMG_PC_OUT}" @ONLY)
