# Source this on a machine without the -dev packages (the lent GPU machine):
#   . scripts/device-env.sh
# unpacks the Debian packages carried in .deps/ (scripts/device-env.sh fetch
# fills it: apt-get download on a Debian machine) into /opt/loomdeps and
# points pkg-config, the compiler and the loader at them.
if [ "${1:-}" = fetch ]; then
  mkdir -p .deps && (cd .deps && apt-get download libcjson-dev libcjson1 libpcre2-dev libpcre2-8-0 libpcre2-16-0 \
    libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2 libopenblas-dev libopenblas0 libopenblas0-pthread \
    libopenblas-pthread-dev libgfortran5 check libsubunit0 libsubunit-dev)
  return 0 2>/dev/null || exit 0
fi
for f in .deps/*.deb; do dpkg -x "$f" /opt/loomdeps; done
d=/opt/loomdeps/usr
sed -i "s|=/usr|=$d|" $d/lib/x86_64-linux-gnu/pkgconfig/*.pc $d/share/pkgconfig/*.pc 2>/dev/null
export PKG_CONFIG_PATH=$d/lib/x86_64-linux-gnu/pkgconfig:$d/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export C_INCLUDE_PATH=$d/include:$d/include/x86_64-linux-gnu${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}
export LIBRARY_PATH=$d/lib/x86_64-linux-gnu:$d/lib/x86_64-linux-gnu/openblas-pthread${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=$d/lib/x86_64-linux-gnu:$d/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
