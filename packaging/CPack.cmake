# Debian packages: `cmake --build build --target package` writes three .debs
# into build/packages/ (README.md, "Install on real hosts"):
#
#   tierwarden-controller  the daemon, its systemd unit, the dashboard (web/),
#                          /etc/tierwarden/{controller.env,fence-agents.conf}, docs
#   tierwarden-agent       the daemon for each hypervisor host, its unit,
#                          /etc/tierwarden/agent.env
#   twctl                  the operator's command line
#
# twctl is a package of its own: operators run it from their workstations and
# from the hypervisor hosts, where installing the controller package would add
# a user, a state dir and an enabled service for nothing. The controller
# package recommends it, so `apt install ./tierwarden-controller_*.deb` on the
# controller machine brings it along.
#
# Runtime dependencies come from dpkg-shlibdeps (what the binaries really link:
# libvirt0, libsqlite3-0, libyaml-cpp0.7, libfmt9, libspdlog1.10, libstdc++6, ...)
# plus the programs the maintainer scripts and the daemons run, listed below.
#
# Included from the top-level CMakeLists.txt after the targets exist. Paths
# under /etc and /lib are absolute on purpose (a package installs them there,
# whatever the prefix); `cmake --install` into a scratch prefix needs DESTDIR.

set(TW_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR})

# ---- what goes where --------------------------------------------------------
install(TARGETS tierwarden-controller RUNTIME DESTINATION sbin COMPONENT controller)
install(TARGETS tierwarden-agent RUNTIME DESTINATION sbin COMPONENT agent)
install(TARGETS twctl RUNTIME DESTINATION bin COMPONENT cli)

# The dashboard: static files, found by the unit's --web-dir.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/web/ DESTINATION share/tierwarden/web COMPONENT controller
        FILES_MATCHING PATTERN "*.html" PATTERN "*.js" PATTERN "*.css" PATTERN "*.svg"
                       PATTERN "*.png" PATTERN "*.ico")

install(FILES ${TW_PACKAGING_DIR}/systemd/tierwarden-controller.service
        DESTINATION /lib/systemd/system COMPONENT controller)
install(FILES ${TW_PACKAGING_DIR}/systemd/tierwarden-agent.service
        DESTINATION /lib/systemd/system COMPONENT agent)

# Conffiles (listed in packaging/debian/<package>/conffiles). fence-agents.conf
# gets 0640 root:tierwarden from the postinst (dpkg-statoverride).
install(FILES ${TW_PACKAGING_DIR}/etc/controller.env ${TW_PACKAGING_DIR}/etc/fence-agents.conf
        DESTINATION /etc/tierwarden PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
        COMPONENT controller)
install(FILES ${TW_PACKAGING_DIR}/etc/agent.env
        DESTINATION /etc/tierwarden PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
        COMPONENT agent)

set(TW_CONTROLLER_DOCS ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/api.md
    ${PROJECT_SOURCE_DIR}/docs/policy.md ${PROJECT_SOURCE_DIR}/docs/fencing.md)
install(FILES ${TW_CONTROLLER_DOCS} DESTINATION share/doc/tierwarden-controller COMPONENT controller)
install(FILES ${PROJECT_SOURCE_DIR}/policies/demo.yaml
        ${PROJECT_SOURCE_DIR}/policies/examples/minimal.yaml
        ${PROJECT_SOURCE_DIR}/policies/examples/lamp-shared-db.yaml
        ${PROJECT_SOURCE_DIR}/policies/examples/fence-agent-hosts.yaml
        ${PROJECT_SOURCE_DIR}/policies/examples/fence-agents.conf
        DESTINATION share/doc/tierwarden-controller/examples COMPONENT controller)
install(FILES ${PROJECT_SOURCE_DIR}/docs/fencing.md
        DESTINATION share/doc/tierwarden-agent COMPONENT agent)

# ---- CPack: DEB, one package per component ----------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tierwarden)
set(CPACK_PACKAGE_VENDOR tierwarden)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "tierwarden maintainers <eng@tierwarden.dev>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/packages)
set(CPACK_STRIP_FILES TRUE)
set(CPACK_COMPONENTS_ALL controller agent cli)
set(CPACK_DEB_COMPONENT_INSTALL ON)
# Absolute destinations (/etc, /lib/systemd) are what a package wants.
set(CPACK_WARN_ON_ABSOLUTE_INSTALL_DESTINATION OFF)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # <package>_<version>-<release>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SOURCE tierwarden)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)  # scripts 0755, conffiles 0644
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)

set(CPACK_DEBIAN_CONTROLLER_PACKAGE_NAME tierwarden-controller)
# adduser: the postinst creates the `tierwarden` user.
set(CPACK_DEBIAN_CONTROLLER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_CONTROLLER_PACKAGE_RECOMMENDS "twctl (= ${PROJECT_VERSION}-1)")
set(CPACK_DEBIAN_CONTROLLER_PACKAGE_SUGGESTS "ipmitool, libvirt-clients")
# Descriptions: the first line is the synopsis (CPACK_PACKAGE_DESCRIPTION_SUMMARY
# stays unset: CPack would put it before each of them).
set(CPACK_DEBIAN_CONTROLLER_DESCRIPTION
    "tierwarden controller: places VM tiers on libvirt hosts and heals them
Keeps the desired state (tiers from YAML policies) and the cluster's memory
in SQLite, places VMs on hypervisor hosts, declares hosts dead only when two
signals agree, fences them, and rebuilds their VMs elsewhere. Serves the REST
API, server-sent events, Prometheus metrics and the dashboard. Runs as the
system user 'tierwarden' under systemd (tierwarden-controller.service).")

set(CPACK_DEBIAN_AGENT_PACKAGE_NAME tierwarden-agent)
# qemu-img makes the VMs' copy-on-write disk overlays; adduser: the postinst
# adds the `tierwarden` group (owner group of /etc/tierwarden/token).
# iproute2 and iputils-arping: a tier's floating address (ip addr, arping -U).
set(CPACK_DEBIAN_AGENT_PACKAGE_DEPENDS "adduser, qemu-utils, iproute2, iputils-arping")
set(CPACK_DEBIAN_AGENT_PACKAGE_RECOMMENDS "libvirt-daemon-system, qemu-system-x86")
set(CPACK_DEBIAN_AGENT_DESCRIPTION
    "tierwarden agent: keeps one hypervisor host's VMs as the controller assigns them
Talks to the local libvirt: defines, starts, restarts and migrates the VMs
assigned to this host, runs their health checks, holds a lease from the
controller and fences itself only when isolated. One per hypervisor host
(tierwarden-agent.service; not enabled until configured).")

set(CPACK_DEBIAN_CLI_PACKAGE_NAME twctl)
set(CPACK_DEBIAN_CLI_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_CLI_PACKAGE_DEPENDS "")  # shlibdeps only
set(CPACK_DEBIAN_CLI_DESCRIPTION
    "command line of the tierwarden cluster controller
twctl talks to a tierwarden controller's REST API: apply policies, get and
describe hosts, tiers, VMs, events and incidents, drain hosts, migrate,
restart and reset VMs.")

foreach(pkg controller agent)
  string(TOUPPER ${pkg} PKG)
  set(dir ${TW_PACKAGING_DIR}/debian/tierwarden-${pkg})
  set(CPACK_DEBIAN_${PKG}_PACKAGE_CONTROL_EXTRA
      "${dir}/conffiles;${dir}/postinst;${dir}/prerm;${dir}/postrm")
endforeach()

include(CPack)
