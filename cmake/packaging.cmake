# Debian packages with CPack (docs/deploy.md, "Debian packages"):
#   libsaga-dev              the static library, its headers and CMake package config
#                            (component "dev": libsaga/CMakeLists.txt's install rules)
#   saga-<service>           one per reference service: /usr/bin/saga-<service>, the systemd
#                            unit saga-<service>.service (Restart=on-failure), its settings
#                            /etc/libsaga/<service>.env (a conffile) and, made by postinst,
#                            the system user saga-<service> owning /var/lib/libsaga/<service>.
# Build the library and the services, then: cpack --config <build>/CPackConfig.cmake
# (tests/install/package_test.cmake does, as the ctest install.packages).
#
# The services' install rules are EXCLUDE_FROM_ALL: a plain `cmake --install` still
# installs the library alone (tests/install/install_test.cmake), and their files under
# /etc and /lib/systemd are absolute paths meant for a package, never for a prefix.

set(SAGA_PACKAGE_SERVICES gateway reservation payment inventory mypage)
set(SAGA_PACKAGE_DIR ${CMAKE_CURRENT_LIST_DIR}/packaging)

set(CPACK_COMPONENTS_ALL dev)
if(SAGA_BUILD_SERVICES)
  foreach(svc IN LISTS SAGA_PACKAGE_SERVICES)
    set(SVC ${svc})
    set(out ${PROJECT_BINARY_DIR}/packaging/${svc})
    configure_file(${SAGA_PACKAGE_DIR}/saga-service.service.in ${out}/saga-${svc}.service @ONLY)
    foreach(script postinst prerm postrm)
      configure_file(${SAGA_PACKAGE_DIR}/${script}.in ${out}/${script} @ONLY
                     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                                      GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
    endforeach()
    file(WRITE ${out}/conffiles "/etc/libsaga/${svc}.env\n")

    install(TARGETS saga-${svc} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
            COMPONENT ${svc} EXCLUDE_FROM_ALL)
    install(FILES ${out}/saga-${svc}.service DESTINATION /lib/systemd/system
            COMPONENT ${svc} EXCLUDE_FROM_ALL)
    install(FILES ${SAGA_PACKAGE_DIR}/env/${svc}.env DESTINATION /etc/libsaga
            PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ
            COMPONENT ${svc} EXCLUDE_FROM_ALL)

    string(TOUPPER ${svc} C)
    set(CPACK_DEBIAN_${C}_PACKAGE_NAME saga-${svc})
    set(CPACK_DEBIAN_${C}_PACKAGE_SECTION net)
    set(CPACK_DEBIAN_${C}_PACKAGE_DEPENDS "adduser")  # postinst; the libraries: shlibdeps
    set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_EXTRA
        "${out}/postinst;${out}/prerm;${out}/postrm;${out}/conffiles")
    set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_STRICT_PERMISSION ON)
    set(CPACK_COMPONENT_${C}_DESCRIPTION
        "libsaga reference service: ${svc}\n The ${svc} service of the reference booking system built on libsaga\n (services/README.md), with its systemd unit and settings.")
    list(APPEND CPACK_COMPONENTS_ALL ${svc})
  endforeach()
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME libsaga)
set(CPACK_PACKAGE_VENDOR "libsaga")
set(CPACK_PACKAGE_CONTACT "libsaga maintainers <libsaga@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# The services' /etc and /lib/systemd files are absolute paths: installed under DESTDIR,
# with CMAKE_INSTALL_PREFIX set to CPACK_INSTALL_PREFIX.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # RelWithDebInfo binaries: ship them without their debug info
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # dpkg-shlibdeps (dpkg-dev) and file: scripts/setup
set(CPACK_DEBIAN_COMPRESSION_TYPE gzip)  # xz takes most of the test's time for no gain here
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libsaga-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# What find_package(libsaga) finds in turn (cmake/SagaDependencies.cmake).
# With SAGA_ROCKSDB_ROOT (RocksDB built from source, static) the services carry
# RocksDB inside, and libsaga-dev's CMake package names that prefix, so it
# works only where the same prefix exists (docs/deploy.md): packages meant for
# other machines are built with Debian's librocksdb, the default.
if(SAGA_ROCKSDB_ROOT)
  set(_saga_rocksdb_dev "libsnappy-dev, liblz4-dev, libzstd-dev, zlib1g-dev, libbz2-dev")
else()
  set(_saga_rocksdb_dev "librocksdb-dev")
endif()
# With SAGA_RDKAFKA_ROOT (librdkafka built from source, shared) the binaries
# load it from that prefix (their RUNPATH), which the packages do not carry:
# such packages work only where the same prefix exists. Packages meant for
# other machines are built with Debian's librdkafka, the default.
if(SAGA_RDKAFKA_ROOT)
  message(WARNING "SAGA_RDKAFKA_ROOT is set: packages built here load librdkafka from "
                  "${SAGA_RDKAFKA_ROOT} and work only where that prefix exists (docs/deploy.md)")
endif()
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libboost1.81-dev, ${_saga_rocksdb_dev}, nlohmann-json3-dev, libspdlog-dev, prometheus-cpp-dev, librdkafka-dev, pkg-config")
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "durable saga orchestrator (static library and headers)\n libsaga: sagas persisted in RocksDB, driven over Kafka; find_package(libsaga CONFIG)\n and link saga::saga.")

include(CPack)
