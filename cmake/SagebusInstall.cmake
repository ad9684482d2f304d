# What `cmake --install` puts in place, and the .deb CPack builds from it:
#   bin/sage-busd, bin/busctl
#   lib/libsagebus.so.<major> (the SDK) and lib/libsagebus-wire.so.<major> (its wire code)
#   include/sagebus/          the SDK's public headers (the wire library's stay private)
#   lib/cmake/SageBus/        find_package(SageBus) -> SageBus::sagebus
#   lib/pkgconfig/sagebus.pc  pkg-config --cflags --libs sagebus
#   lib/systemd/system/sage-busd.service, and sage-bus/sage-busd.toml in the sysconfdir
#   (/etc for the prefix /usr, else PREFIX/etc)
# and, with the Python client (python/CMakeLists.txt, install component "python"), the
# package sagebus for Debian's python3: the .deb python3-sagebus beside sage-bus.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Installed programs find the project's libraries beside them, wherever the prefix is
# (sage-busd links none: its wire code is static, proto/CMakeLists.txt).
set_target_properties(busctl PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
set_target_properties(sagebus PROPERTIES INSTALL_RPATH "$ORIGIN")  # finds libsagebus-wire

install(TARGETS busctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS sagebus_wire EXPORT SageBusTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_SKIP)
install(TARGETS sagebus EXPORT SageBusTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/sdk/include/sagebus
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(config_dir ${CMAKE_INSTALL_LIBDIR}/cmake/SageBus)
install(EXPORT SageBusTargets NAMESPACE SageBus:: DESTINATION ${config_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/SageBusConfig.cmake.in
  ${PROJECT_BINARY_DIR}/SageBusConfig.cmake INSTALL_DESTINATION ${config_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/SageBusConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/SageBusConfig.cmake
              ${PROJECT_BINARY_DIR}/SageBusConfigVersion.cmake
  DESTINATION ${config_dir})

# The .pc file locates the prefix from where it lies, so `cmake --install --prefix P`
# works for any P.
file(RELATIVE_PATH SAGEBUS_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
configure_file(${PROJECT_SOURCE_DIR}/cmake/sagebus.pc.in ${PROJECT_BINARY_DIR}/sagebus.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sagebus.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The systemd unit and the default configuration. The unit names the installed paths:
# deploy/ holds them for the prefix /usr, and other prefixes get them rewritten.
if(CMAKE_INSTALL_FULL_SYSCONFDIR STREQUAL "/etc")
  set(sagebus_etc_dir /etc/sage-bus)  # the FHS place; a conffile of the .deb
  file(WRITE ${PROJECT_BINARY_DIR}/debian/conffiles "/etc/sage-bus/sage-busd.toml\n")
  set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/debian/conffiles)
else()
  set(sagebus_etc_dir ${CMAKE_INSTALL_SYSCONFDIR}/sage-bus)  # under the install prefix
endif()
file(READ ${PROJECT_SOURCE_DIR}/deploy/sage-busd.service sagebus_unit)
string(REPLACE "/usr/bin/sage-busd" "${CMAKE_INSTALL_FULL_BINDIR}/sage-busd" sagebus_unit
  "${sagebus_unit}")
string(REPLACE "/etc/sage-bus/" "${CMAKE_INSTALL_FULL_SYSCONFDIR}/sage-bus/" sagebus_unit
  "${sagebus_unit}")
file(GENERATE OUTPUT ${PROJECT_BINARY_DIR}/sage-busd.service CONTENT "${sagebus_unit}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/deploy/sage-busd.service)
install(FILES ${PROJECT_BINARY_DIR}/sage-busd.service DESTINATION lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/sage-busd.toml DESTINATION ${sagebus_etc_dir})

# cpack -G DEB: sage-bus (everything but the Python client), whose dependencies are
# Debian's runtime packages, and python3-sagebus beside it.
set(CPACK_PACKAGE_NAME sage-bus)
set(CPACK_PACKAGE_VENDOR "sage-bus")
set(CPACK_PACKAGE_CONTACT "sage-bus engineers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "sage-bus message broker (sage-busd), SDK and busctl")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # libzmq5, libprotobuf32, libprotobuf-lite32, ... from dpkg-shlibdeps
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_UNSPECIFIED_PACKAGE_NAME sage-bus)
set(CPACK_COMPONENTS_ALL Unspecified)
if(TARGET sagebus_python)
  list(APPEND CPACK_COMPONENTS_ALL python)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-sagebus)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  set(CPACK_DEBIAN_PYTHON_DESCRIPTION "sage-bus Python client (import sagebus)")
  # Its one library of ours, libsagebus, is sage-bus's: dpkg-shlibdeps cannot see it there.
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SHLIBDEPS OFF)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS
      "sage-bus (= ${PROJECT_VERSION}), python3 (>= ${SAGEBUS_PYTHON_VERSION}), python3 (<< ${SAGEBUS_PYTHON_VERSION}.999)")
endif()
set(CPACK_GENERATOR DEB)
# The package holds exactly what `cmake --install` puts in place: the same prefix, so the
# paths chosen above (sysconfdir, the unit's ExecStart) hold in it too. Configure with
# -DCMAKE_INSTALL_PREFIX=/usr for a package in Debian's layout (/usr, /etc conffile).
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
include(CPack)
