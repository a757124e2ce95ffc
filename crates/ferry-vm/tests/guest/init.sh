#!/bin/busybox sh
# /init of the tests' stand-in guest: a busybox initramfs booted with QEMU's -kernel/-initrd.
# It does what Ferry's probe does on a real system, the busybox way: brings up the NIC with DHCP from
# QEMU, reads the checks configuration from fw_cfg, runs its commands, prints FERRY-BOOT-REPORT/1 on the
# serial console and sends it to report_to. It also serves HTTP on port 80 and listens on 22 (the
# host-side tcp/http checks). Kernel parameters: ferry.mode=report (default) | silent (never reports)
# | console-only (reports on the console, not over the network); ferry.probe=<ip:port> (tries to reach
# that address and records whether it could: network isolation).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# What udev/systemd provide on a real system (bash's process substitution needs /dev/fd).
ln -s /proc/self/fd /dev/fd
exec </dev/console >/dev/console 2>&1
dmesg -n 1
M=/lib/modules
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net qemu_fw_cfg; do
  insmod $M/$m.ko || echo "ferry-guest: insmod $m failed"
done
mode=report
probe=
for a in $(cat /proc/cmdline); do
  case "$a" in
    ferry.mode=*) mode=${a#ferry.mode=} ;;
    ferry.probe=*) probe=${a#ferry.probe=} ;;
  esac
done
echo "ferry-guest: init started, mode $mode"
if [ "$mode" = poweroff ]; then
  echo "ferry-guest: powering off"
  poweroff -f
fi
if [ "$mode" = silent ]; then
  while true; do sleep 3600; done
fi

ip link set lo up
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
ip link set "$nic" up
cat > /bin/dhcp-script <<'EOS'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "$router" dev "$interface"
    echo "$ip" > /tmp/lease
    # Where dhclient keeps its lease: the probe recognises a DHCP address by it.
    mkdir -p /var/lib/dhcp
    echo "lease { fixed-address $ip; }" > "/var/lib/dhcp/dhclient.$interface.leases" ;;
esac
EOS
chmod +x /bin/dhcp-script
udhcpc -i "$nic" -s /bin/dhcp-script -n -q -t 10 -T 2 >/tmp/udhcpc.log 2>&1
lease=false
[ -s /tmp/lease ] && lease=true
echo "ferry-guest: nic $nic lease $lease $(cat /tmp/lease 2>/dev/null)"

mkdir -p /www && echo "hello from the ferry test guest" > /www/index.html
httpd -p 80 -h /www
nc -ll -p 22 -e /bin/cat &

if [ "$mode" = probe ]; then
  FERRY_WAIT_SECS=0 /bin/bash /usr/lib/ferry/boot-report >/dev/null
  echo "ferry-guest: probe exited $?"
  while true; do sleep 3600; done
fi

cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/ferry/boot-checks/raw
token=null
report_to=
commands=
if [ -r "$cfg" ]; then
  conf=$(cat "$cfg")
  t=$(echo "$conf" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  [ -n "$t" ] && token="\"$t\""
  report_to=$(echo "$conf" | sed -n 's/.*"report_to":"\([^"]*\)".*/\1/p')
  # Commands as the validator writes them: {"name":"…","command":"…",…} with no quotes inside.
  echo "$conf" | grep -o '"name":"[^"]*","command":"[^"]*"' > /tmp/commands
  first=1
  while IFS= read -r c; do
    name=$(echo "$c" | sed 's/^"name":"\([^"]*\)".*/\1/')
    cmd=$(echo "$c" | sed 's/.*"command":"\([^"]*\)"$/\1/')
    sh -c "$cmd" >/tmp/out 2>&1
    code=$?
    out=$(head -c 4096 /tmp/out | tr -d '"\\\r' | tr '\n\t' '  ')
    [ $first = 1 ] || commands="$commands,"
    first=0
    commands="$commands{\"name\":\"$name\",\"command\":\"$cmd\",\"exit_code\":$code,\"output\":\"$out\",\"passed\":false}"
  done < /tmp/commands
fi

if [ -n "$probe" ]; then
  if echo isolation | nc -w 3 ${probe%:*} ${probe#*:} >/dev/null 2>&1; then reached=yes; else reached=no; fi
  [ -n "$commands" ] && commands="$commands,"
  commands="$commands{\"name\":\"reach $probe\",\"command\":\"nc\",\"exit_code\":0,\"output\":\"$reached\",\"passed\":true}"
fi

addr=$(cat /tmp/lease 2>/dev/null)
mac=$(cat /sys/class/net/$nic/address)
addrs=
[ -n "$addr" ] && addrs="\"$addr/24\""
up=$(cut -d' ' -f1 /proc/uptime)
json="{\"version\":1,\"token\":$token,\"kernel\":\"$(uname -r)\",\"hostname\":\"$(hostname)\",\"system_state\":\"running\",\"default_target\":\"busybox-init\",\"default_target_reached\":true,\"failed_units\":[],\"interfaces\":[{\"name\":\"$nic\",\"mac\":\"$mac\",\"addresses\":[$addrs],\"dhcp\":$lease}],\"dhcp_lease\":$lease,\"mounts\":[{\"spec\":\"rootfs\",\"mountpoint\":\"/\",\"fstype\":\"rootfs\",\"mounted\":true,\"source\":\"rootfs\"}],\"commands\":[$commands],\"uptime_secs\":$up}"
echo "FERRY-BOOT-REPORT/1 $json"
if [ "$mode" = report ] && [ -n "$report_to" ]; then
  echo "$json" | nc -w 5 ${report_to%:*} ${report_to#*:} && echo "ferry-guest: report sent to $report_to"
fi
while true; do sleep 3600; done
