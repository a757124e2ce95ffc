#!/bin/bash
# Ferry boot report, version 1 (docs/boot-validation.md). Installed by Ferry's guest adaptation as
# /usr/lib/ferry/boot-report and run once per boot by ferry-boot-report.service.
#
# It only reads and prints: it waits for the boot to finish, gathers the state of the system into one
# line of compact JSON, writes "FERRY-BOOT-REPORT/1 <json>" to the serial console and, when the checks
# configuration names report_to, sends "<json>\n" there over TCP.
#
# Needs bash, coreutils, util-linux, systemd; uses ip(8) when present. No jq, no python.
# Environment overrides (for tests): FERRY_BOOT_CHECKS (checks file), FERRY_CONSOLE (output device),
# FERRY_WAIT_SECS (boot wait, default 120), FERRY_FSTAB (default /etc/fstab).

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

FW_CFG=/sys/firmware/qemu_fw_cfg/by_name/opt/ferry/boot-checks/raw
CHECKS=${FERRY_BOOT_CHECKS:-$FW_CFG}
CONSOLE=${FERRY_CONSOLE:-/dev/ttyS0}
WAIT=${FERRY_WAIT_SECS:-120}
FSTAB=${FERRY_FSTAB:-/etc/fstab}

# ---- JSON output -------------------------------------------------------------------------------------

# json_str TEXT: sets REPLY to TEXT as a quoted JSON string.
json_str() {
    local s=$1 i hex ch rep
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    for i in 1 2 3 4 5 6 7 8 11 12 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 127; do
        printf -v hex '%02x' "$i"
        printf -v ch "\\x$hex"
        if [[ $s == *"$ch"* ]]; then
            printf -v rep '\\u%04x' "$i"
            s=${s//"$ch"/"$rep"}
        fi
    done
    REPLY="\"$s\""
}

# json_str_list ITEM...: sets REPLY to a JSON array of strings.
json_str_list() {
    local out="" item
    for item in "$@"; do
        json_str "$item"
        out+="${out:+,}$REPLY"
    done
    REPLY="[$out]"
}

# ---- JSON input (the checks configuration) -----------------------------------------------------------
# A small recursive-descent parser that flattens the document into J (path -> value) and JT (path -> type):
# J[token], J[commands.#] (array length), J[commands.0.name], ...

declare -A J JT
S=""
P=0

j_ws() {
    while ((P < ${#S})); do
        case ${S:P:1} in
            ' ' | $'\t' | $'\n' | $'\r') P=$((P + 1)) ;;
            *) return 0 ;;
        esac
    done
}

j_string() {
    local out="" c run hex
    P=$((P + 1))
    while ((P < ${#S})); do
        c=${S:P:1}
        case $c in
            '"')
                P=$((P + 1))
                REPLY=$out
                return 0
                ;;
            '\')
                c=${S:P+1:1}
                case $c in
                    n) out+=$'\n' ;;
                    t) out+=$'\t' ;;
                    r) out+=$'\r' ;;
                    b) out+=$'\b' ;;
                    f) out+=$'\f' ;;
                    u)
                        hex=${S:P+2:4}
                        [[ $hex =~ ^[0-9a-fA-F]{4}$ ]] || return 1
                        if [[ $hex == 00[0-7]? ]]; then
                            printf -v c "\\x${hex:2:2}"
                        else
                            printf -v c "\\u$hex"
                        fi
                        out+=$c
                        P=$((P + 4))
                        ;;
                    *) out+=$c ;;
                esac
                P=$((P + 2))
                ;;
            *)
                run=${S:P}
                run=${run%%[\"\\]*}
                out+=$run
                P=$((P + ${#run}))
                ;;
        esac
    done
    return 1
}

# j_value PATH
j_value() {
    local path=$1 c k n
    j_ws
    c=${S:P:1}
    case $c in
        '{')
            P=$((P + 1))
            j_ws
            if [[ ${S:P:1} == '}' ]]; then
                P=$((P + 1))
                return 0
            fi
            while :; do
                j_ws
                [[ ${S:P:1} == '"' ]] || return 1
                j_string || return 1
                k=$REPLY
                j_ws
                [[ ${S:P:1} == ':' ]] || return 1
                P=$((P + 1))
                j_value "${path:+$path.}$k" || return 1
                j_ws
                c=${S:P:1}
                P=$((P + 1))
                [[ $c == ',' ]] && continue
                [[ $c == '}' ]] && return 0
                return 1
            done
            ;;
        '[')
            P=$((P + 1))
            n=0
            j_ws
            if [[ ${S:P:1} == ']' ]]; then
                P=$((P + 1))
                J["$path.#"]=0
                return 0
            fi
            while :; do
                j_value "$path.$n" || return 1
                n=$((n + 1))
                j_ws
                c=${S:P:1}
                P=$((P + 1))
                if [[ $c == ']' ]]; then
                    J["$path.#"]=$n
                    return 0
                fi
                [[ $c == ',' ]] || return 1
            done
            ;;
        '"')
            j_string || return 1
            J["$path"]=$REPLY
            JT["$path"]=string
            ;;
        *)
            if [[ ${S:P:40} =~ ^(-?[0-9][0-9.eE+-]*|true|false|null) ]]; then
                J["$path"]=${BASH_REMATCH[1]}
                JT["$path"]=literal
                P=$((P + ${#BASH_REMATCH[1]}))
            else
                return 1
            fi
            ;;
    esac
    return 0
}

if [[ $CHECKS == "$FW_CFG" && ! -e $FW_CFG ]]; then
    modprobe qemu_fw_cfg 2>/dev/null
fi
if [[ -r $CHECKS ]]; then
    S=$(head -c 1048576 "$CHECKS")
    P=0
    if ! j_value ""; then
        J=()
        JT=()
        echo "ferry-boot-report: $CHECKS is not valid JSON: running no commands" >&2
    fi
fi

# ---- wait for the boot to finish ---------------------------------------------------------------------

if command -v systemctl >/dev/null 2>&1 && ((WAIT > 0)); then
    timeout "$WAIT" systemctl is-system-running --wait >/dev/null 2>&1
fi

# ---- gather ------------------------------------------------------------------------------------------

run_or() { # run_or DEFAULT CMD...: the command's first output line, or DEFAULT
    local d=$1 out
    shift
    out=$("$@" 2>/dev/null | head -n 1)
    REPLY=${out:-$d}
}

FIELDS=()
add() { FIELDS+=("\"$1\":$2"); }

add version 1
if [[ ${JT[token]} == string ]]; then
    json_str "${J[token]}"
    add token "$REPLY"
else
    add token null
fi
run_or unknown uname -r
json_str "$REPLY"
add kernel "$REPLY"
HOST=""
read -r HOST </proc/sys/kernel/hostname 2>/dev/null
json_str "${HOST:-unknown}"
add hostname "$REPLY"

if command -v systemctl >/dev/null 2>&1; then
    run_or unknown systemctl is-system-running
    STATE=$REPLY
    run_or unknown systemctl get-default
    TARGET=$REPLY
    REACHED=false
    [[ $(systemctl is-active "$TARGET" 2>/dev/null) == active ]] && REACHED=true
    mapfile -t FAILED < <(systemctl list-units --failed --plain --no-legend --no-pager 2>/dev/null | awk 'NF {print $1}')
else
    STATE=unknown TARGET=unknown REACHED=false FAILED=()
fi
json_str "$STATE"
add system_state "$REPLY"
json_str "$TARGET"
add default_target "$REPLY"
add default_target_reached "$REACHED"
json_str_list "${FAILED[@]}"
add failed_units "$REPLY"

# Interfaces: name, MAC, addresses, DHCP (a dynamic IPv4 address or a lease file for the interface).
IFACES=""
DHCP_LEASE=false
for dev in /sys/class/net/*; do
    name=${dev##*/}
    [[ -e $dev && $name != lo ]] || continue
    mac=""
    read -r mac <"$dev/address" 2>/dev/null
    addrs=()
    dyn=false
    v4=false
    if command -v ip >/dev/null 2>&1; then
        while read -r _ _ fam cidr rest; do
            [[ $fam == inet || $fam == inet6 ]] || continue
            addrs+=("$cidr")
            if [[ $fam == inet ]]; then
                v4=true
                [[ " $rest " == *" dynamic "* ]] && dyn=true
            fi
        done < <(ip -o addr show dev "$name" 2>/dev/null)
    fi
    if [[ $dyn == false ]]; then
        ifindex=""
        read -r ifindex <"$dev/ifindex" 2>/dev/null
        for lease in /var/lib/dhcp/dhclient*."$name".lease* /var/lib/dhcp/dhclient*-"$name".lease* \
            /run/systemd/netif/leases/"$ifindex" /var/lib/NetworkManager/*"$name"*.lease \
            /var/lib/dhcpcd/*"$name"*.lease* /var/lib/dhcpcd5/*"$name"*.lease* /var/lib/dhclient/*"$name"*.lease*; do
            if [[ -s $lease && -n $ifindex ]]; then
                dyn=true
                break
            fi
        done
    fi
    [[ $dyn == true && $v4 == true ]] && DHCP_LEASE=true
    json_str "$name"
    n=$REPLY
    json_str "$mac"
    m=$REPLY
    json_str_list "${addrs[@]}"
    IFACES+="${IFACES:+,}{\"name\":$n,\"mac\":$m,\"addresses\":$REPLY,\"dhcp\":$dyn}"
done
add interfaces "[$IFACES]"
add dhcp_lease "$DHCP_LEASE"

# Mounts: every fstab entry but swap, noauto and pseudo filesystems, with what is mounted there.
unoct() { printf -v REPLY '%b' "${1//\\/\\0}"; }
declare -A MOUNTED
while read -r src mp _; do
    unoct "$mp"
    mp=$REPLY
    unoct "$src"
    MOUNTED["$mp"]=$REPLY
done </proc/self/mounts
MOUNTS=""
if [[ -r $FSTAB ]]; then
    while read -r spec mp fstype opts _; do
        [[ -z $spec || $spec == \#* || -z $mp ]] && continue
        case $fstype in
            swap | proc | sysfs | devpts | tmpfs | devtmpfs | cgroup | cgroup2 | securityfs | debugfs | efivarfs | \
                bpf | hugetlbfs | mqueue | configfs | fusectl | pstore | tracefs | binfmt_misc | autofs | none | ramfs) continue ;;
        esac
        [[ ,$opts, == *,noauto,* ]] && continue
        unoct "$spec"
        spec=$REPLY
        unoct "$mp"
        mp=$REPLY
        [[ $mp != / ]] && mp=${mp%/}
        source_dev=${MOUNTED[$mp]-}
        mounted=false
        [[ -n ${MOUNTED[$mp]+x} ]] && mounted=true
        json_str "$spec"
        a=$REPLY
        json_str "$mp"
        b=$REPLY
        json_str "$fstype"
        c=$REPLY
        json_str "$source_dev"
        MOUNTS+="${MOUNTS:+,}{\"spec\":$a,\"mountpoint\":$b,\"fstype\":$c,\"mounted\":$mounted,\"source\":$REPLY}"
    done <"$FSTAB"
fi
add mounts "[$MOUNTS]"

# Commands from the checks configuration: bash -c, 60 s each, output (stdout+stderr) cut at 4 KiB.
CMDS=""
count=${J[commands.#]:-0}
[[ $count =~ ^[0-9]+$ ]] || count=0
if ((count > 0)); then
    tmp=$(mktemp /tmp/ferry-boot-report.XXXXXX)
    for ((i = 0; i < count; i++)); do
        cname=${J[commands.$i.name]-command $i}
        cmd=${J[commands.$i.command]-}
        expect_exit=${J[commands.$i.expect_exit]:-0}
        expect_output=${J[commands.$i.expect_output]-}
        timeout 60 bash -c "$cmd" </dev/null >"$tmp" 2>&1
        code=$?
        out=$(head -c 4096 "$tmp" | tr -d '\000')
        if command -v iconv >/dev/null 2>&1; then
            out=$(printf '%s' "$out" | iconv -c -f UTF-8 -t UTF-8 2>/dev/null)
        fi
        passed=false
        if [[ $code == "$expect_exit" ]] && [[ -z $expect_output || $out == *"$expect_output"* ]]; then
            passed=true
        fi
        json_str "$cname"
        a=$REPLY
        json_str "$cmd"
        b=$REPLY
        json_str "$out"
        CMDS+="${CMDS:+,}{\"name\":$a,\"command\":$b,\"exit_code\":$code,\"output\":$REPLY,\"passed\":$passed}"
    done
    rm -f "$tmp"
fi
add commands "[$CMDS]"

UP=0
read -r UP _ </proc/uptime 2>/dev/null
[[ $UP =~ ^[0-9]+(\.[0-9]+)?$ ]] || UP=0
add uptime_secs "$UP"

JSON="{$(IFS=,; echo "${FIELDS[*]}")}"

# ---- report ------------------------------------------------------------------------------------------

if [[ -z ${FERRY_CONSOLE-} ]]; then
    dmesg -n 1 2>/dev/null
fi
printf 'FERRY-BOOT-REPORT/1 %s\n' "$JSON" >"$CONSOLE" 2>/dev/null
echo "FERRY-BOOT-REPORT/1 $JSON"

TO=${J[report_to]-}
if [[ -n $TO && $TO =~ ^([^:]+):([0-9]+)$ ]]; then
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[2]}
    # The network may come up a little after the default target: retry for up to 60 s.
    for _ in $(seq 1 30); do
        if timeout 10 bash -c 'printf "%s\n" "$1" >"/dev/tcp/$2/$3"' _ "$JSON" "$host" "$port" 2>/dev/null; then
            break
        fi
        sleep 2
    done
fi
exit 0
