# APPROUTE_STATIC_DEPS=ON: link xxHash and OpenSSL's libcrypto from their
# static archives into the Python extension. The wheel build (pyproject.toml)
# turns it on; scripts/wheel.sh then has `auditwheel repair` graft what is
# still dynamic -- Abseil and yaml-cpp -- into the wheel. See docs/install.md.
#
# Why not Abseil and yaml-cpp too: Debian 12 builds their .a as PIE, not PIC,
# and ld refuses them in a shared object: libabsl_base, _cord,
# _cordz_functions, _raw_hash_set and _random_internal_pool_urbg use the
# local-exec TLS model ("relocation R_X86_64_TPOFF32 ... can not be used when
# making a shared object"), libyaml-cpp.a has PC32 relocations against libc
# symbols ("... __libc_single_threaded ... recompile with -fPIC").
# libcrypto.a (OpenSSL builds it PIC) and libxxhash.a link fine.
#
# libcrypto is the one that matters: linked in and hidden with
# -Wl,--exclude-libs,ALL (bindings/CMakeLists.txt), our copy cannot be
# interposed by, or interpose on, the libcrypto.so.3 that Kamailio's tls
# module or Python's _hashlib load into the same process.
#
# Included by the top-level CMakeLists.txt after the find_package() calls.
# OpenSSL is handled by FindOpenSSL itself (OPENSSL_USE_STATIC_LIBS, set
# before find_package); xxHash's pkg-config target lists the .so by path and
# is pointed at the .a next to it.

set(_approute_static "")
if(TARGET PkgConfig::XXHASH)
  get_target_property(libs PkgConfig::XXHASH INTERFACE_LINK_LIBRARIES)
  set(static_libs "")
  foreach(lib IN LISTS libs)
    if(lib MATCHES "\\.so(\\.[0-9.]+)?$")
      string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${lib}")
      if(NOT EXISTS "${archive}")
        message(FATAL_ERROR "APPROUTE_STATIC_DEPS: no ${archive} next to ${lib} "
          "(install libxxhash-dev, or configure with -DAPPROUTE_STATIC_DEPS=OFF)")
      endif()
      set(lib "${archive}")
      list(APPEND _approute_static "${archive}")
    endif()
    list(APPEND static_libs "${lib}")
  endforeach()
  set_target_properties(PkgConfig::XXHASH PROPERTIES INTERFACE_LINK_LIBRARIES "${static_libs}")
endif()

if(NOT OPENSSL_CRYPTO_LIBRARY MATCHES "\\.a$")
  message(FATAL_ERROR "APPROUTE_STATIC_DEPS: FindOpenSSL found ${OPENSSL_CRYPTO_LIBRARY}, "
    "not libcrypto.a (install libssl-dev, or configure with -DAPPROUTE_STATIC_DEPS=OFF)")
endif()
list(APPEND _approute_static "${OPENSSL_CRYPTO_LIBRARY}")
message(STATUS "approute: linked statically: ${_approute_static}")
