#!/usr/bin/env bash
# The example cluster on one machine: N broadcaster nodes sharing one Redis,
# behind nginx, with an admin token. Every port and URL is a flag or an
# environment variable; nothing here needs editing. See docs/cluster.md.
#
#   configs/cluster/run.sh                      # 3 nodes on 8801-8803, nginx on 8800
#   configs/cluster/run.sh --redis-port 6390    # and a Redis of its own on 6390
#   configs/cluster/run.sh --help
#
# It stays in the foreground; Ctrl-C (or SIGTERM) stops nginx, the nodes and
# its own Redis, and it exits 0. If any of them exits by itself, it stops the
# others, shows that one's last log lines and exits 1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() {
    cat <<'EOF'
Usage: configs/cluster/run.sh [options]     (each option also has an environment variable)

  --nodes N            CLUSTER_NODES          nodes to start (default 3)
  --base-port P        CLUSTER_BASE_PORT      node i listens on 127.0.0.1:P+i-1 (default 8801)
  --nginx-host H       CLUSTER_NGINX_HOST     address nginx listens on (default 127.0.0.1)
  --nginx-port Q       CLUSTER_NGINX_PORT     port nginx listens on (default 8800)
  --redis-url URL      CLUSTER_REDIS_URL      the Redis the nodes share (default redis://127.0.0.1:6379/0)
  --redis-port R       CLUSTER_REDIS_PORT     instead: start redis-server on 127.0.0.1:R (no persistence)
  --prefix PREFIX      CLUSTER_PREFIX         Redis key prefix, one per cluster (default broadcaster:)
  --admin-token T      BROADCASTER_ADMIN_TOKEN  admin token, 16+ characters (default: a random one)
  --run-dir DIR        CLUSTER_RUN_DIR        nginx.conf, pid file, logs, admin-token (default: a new
                                              directory under ${TMPDIR:-/tmp})
  --broadcaster PATH   CLUSTER_BROADCASTER    the server command (default .venv/bin/broadcaster)
  --nginx PATH         CLUSTER_NGINX          (default: nginx on PATH, else /usr/sbin/nginx)
  --redis-server PATH  CLUSTER_REDIS_SERVER   (default: redis-server on PATH)
  --check                                     render nginx.conf, test it with nginx -t, exit
  -h, --help

Prefer the environment variable for the token: a flag shows in `ps`.
EOF
}

die() {
    echo "run.sh: $*" >&2
    exit 2
}

nodes=${CLUSTER_NODES:-3}
base_port=${CLUSTER_BASE_PORT:-8801}
nginx_host=${CLUSTER_NGINX_HOST:-127.0.0.1}
nginx_port=${CLUSTER_NGINX_PORT:-8800}
redis_url=${CLUSTER_REDIS_URL:-}
redis_port=${CLUSTER_REDIS_PORT:-}
prefix=${CLUSTER_PREFIX:-broadcaster:}
admin_token=${BROADCASTER_ADMIN_TOKEN:-}
run_dir=${CLUSTER_RUN_DIR:-}
broadcaster=${CLUSTER_BROADCASTER:-$root/.venv/bin/broadcaster}
nginx=${CLUSTER_NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
redis_server=${CLUSTER_REDIS_SERVER:-$(command -v redis-server || echo redis-server)}
check_only=0

while (($#)); do
    case $1 in
    -h | --help) usage; exit 0 ;;
    --check) check_only=1; shift; continue ;;
    --nodes | --base-port | --nginx-host | --nginx-port | --redis-url | --redis-port | --prefix | \
        --admin-token | --run-dir | --broadcaster | --nginx | --redis-server)
        (($# >= 2)) || die "$1 needs a value (see --help)" ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    case $1 in
    --nodes) nodes=$2 ;;
    --base-port) base_port=$2 ;;
    --nginx-host) nginx_host=$2 ;;
    --nginx-port) nginx_port=$2 ;;
    --redis-url) redis_url=$2 ;;
    --redis-port) redis_port=$2 ;;
    --prefix) prefix=$2 ;;
    --admin-token) admin_token=$2 ;;
    --run-dir) run_dir=$2 ;;
    --broadcaster) broadcaster=$2 ;;
    --nginx) nginx=$2 ;;
    --redis-server) redis_server=$2 ;;
    esac
    shift 2
done

is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

[[ $nodes =~ ^[0-9]+$ ]] && ((10#$nodes >= 1)) || die "--nodes: expected a count >= 1, got '$nodes'"
nodes=$((10#$nodes))
is_port "$base_port" || die "--base-port: expected a port (1-65535), got '$base_port'"
base_port=$((10#$base_port))
last_port=$((base_port + nodes - 1))
((last_port <= 65535)) || die "--base-port $base_port + $nodes nodes goes past port 65535"
is_port "$nginx_port" || die "--nginx-port: expected a port (1-65535), got '$nginx_port'"
nginx_port=$((10#$nginx_port))
if ((nginx_port >= base_port && nginx_port <= last_port)); then
    die "--nginx-port $nginx_port is one of the nodes' ports ($base_port-$last_port)"
fi
if [[ -n $redis_port ]]; then
    [[ -z $redis_url ]] || die "give either --redis-url (your Redis) or --redis-port (a new one), not both"
    is_port "$redis_port" || die "--redis-port: expected a port (1-65535), got '$redis_port'"
    redis_port=$((10#$redis_port))
    if ((redis_port == nginx_port || (redis_port >= base_port && redis_port <= last_port))); then
        die "--redis-port $redis_port is taken by nginx or a node"
    fi
    redis_url="redis://127.0.0.1:$redis_port/0"
fi
redis_url=${redis_url:-redis://127.0.0.1:6379/0}
[[ -n $prefix ]] || die "--prefix: expected a non-empty Redis key prefix"
# It goes into nginx.conf as is: an address or a name, nothing that could end the directive.
[[ $nginx_host =~ ^[][A-Za-z0-9.:_-]+$ ]] || die "--nginx-host: expected an address or a host name, got '$nginx_host'"

# The nodes check this too, but only in their logs: say it here, at once.
if [[ -z $admin_token ]]; then
    admin_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
elif ((${#admin_token} < 16)) || [[ $admin_token =~ ^[[:space:]] || $admin_token =~ [[:space:]]$ ]]; then
    die "the admin token must have at least 16 characters and no surrounding spaces"
fi

[[ -x $nginx ]] || die "nginx not found at '$nginx': install it (apt-get install nginx) or pass --nginx PATH"

if [[ -z $run_dir ]]; then
    run_dir=$(mktemp -d "${TMPDIR:-/tmp}/broadcaster-cluster.XXXXXX")
    chmod 755 "$run_dir" # nginx workers may run as another user
fi
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)

# nginx.conf from the template: the listen address and one upstream line per node.
upstreams=""
for ((i = 0; i < nodes; i++)); do
    upstreams+="        server 127.0.0.1:$((base_port + i)) max_fails=1 fail_timeout=5s;"$'\n'
done
template=$(<"$here/nginx.conf.template")
template=${template//@LISTEN@/"$nginx_host:$nginx_port"}
template=${template//@UPSTREAMS@/"${upstreams%$'\n'}"}
printf '%s\n' "$template" >"$run_dir/nginx.conf"

if ((check_only)); then
    exec "$nginx" -t -q -e stderr -p "$run_dir/" -c "$run_dir/nginx.conf"
fi

[[ -x $broadcaster ]] || die "'$broadcaster' not found: create the venv (README, \"Install\") or pass --broadcaster PATH"
if [[ -n $redis_port ]] && ! command -v "$redis_server" >/dev/null; then
    die "redis-server not found: install it (apt-get install redis-server) or pass --redis-server PATH"
fi

# Whether something accepts connections on HOST:PORT (bash's /dev/tcp, no other tool).
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Where nginx can be reached from here (URLs, and /dev/tcp without IPv6 brackets):
# its listen address, or loopback when it listens on every address.
url_host=$nginx_host
if [[ $url_host == 0.0.0.0 || $url_host == "*" || $url_host == "[::]" ]]; then url_host=127.0.0.1; fi
nginx_reach=${url_host#[}
nginx_reach=${nginx_reach%]}

busy=()
if listening "$nginx_reach" "$nginx_port"; then busy+=("$nginx_port"); fi
for port in $redis_port $(seq "$base_port" "$last_port"); do
    if listening 127.0.0.1 "$port"; then busy+=("$port"); fi
done
((${#busy[@]} == 0)) || die "port(s) ${busy[*]} already in use: choose others (--base-port, --nginx-port, --redis-port)"

(umask 077 && printf '%s\n' "$admin_token" >"$run_dir/admin-token")

pids=() names=() logs=()
redis_pid=""

# start NAME LOG COMMAND...: run COMMAND in the background, its output in LOG.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    pids+=("$!")
    names+=("$name")
    logs+=("$log")
}

# Stop the given processes with SIGTERM; SIGKILL what is left after 20 s.
terminate() {
    local pid alive i
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive=0
        for pid in "$@"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
}

stopping=0
stop_all() {
    ((stopping == 0)) || return 0
    stopping=1
    trap '' INT TERM # a second Ctrl-C must not cut the clean-up short
    local front=() i
    for i in "${!pids[@]}"; do
        [[ ${pids[$i]} == "$redis_pid" ]] || front+=("${pids[$i]}")
    done
    # nginx and the nodes first; our Redis last, so the nodes shut down against it.
    terminate "${front[@]}"
    if [[ -n $redis_pid ]]; then terminate "$redis_pid"; fi
}

trap 'echo "stopping the cluster"; stop_all; exit 0' INT TERM
trap stop_all EXIT

# show_death INDEX: say which process exited and show the end of its log.
show_death() {
    echo "run.sh: ${names[$1]} exited; the end of ${logs[$1]}:" >&2
    tail -n 20 "${logs[$1]}" >&2 || true
}

# wait_listening INDEX HOST PORT: until process INDEX accepts connections on HOST:PORT
# (30 s at most); exit 1 if it dies first.
wait_listening() {
    local i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "${pids[$1]}" 2>/dev/null; then
            show_death "$1"
            exit 1
        fi
        if listening "$2" "$3"; then return 0; fi
        sleep 0.1
    done
    echo "run.sh: ${names[$1]} did not listen on $2:$3 within 30 s; see ${logs[$1]}" >&2
    exit 1
}

if [[ -n $redis_port ]]; then
    start "redis-server" "$run_dir/redis.log" "$redis_server" --bind 127.0.0.1 --port "$redis_port" \
        --dir "$run_dir" --save "" --appendonly no --logfile ""
    redis_pid=${pids[-1]}
    wait_listening 0 127.0.0.1 "$redis_port"
fi

export BROADCASTER_BROKER_URL=$redis_url BROADCASTER_BROKER_PREFIX=$prefix
export BROADCASTER_ADMIN_TOKEN=$admin_token
first_node=${#pids[@]}
for ((i = 1; i <= nodes; i++)); do
    port=$((base_port + i - 1))
    ticker=()
    if ((i == 1)); then ticker=(--source demo_ticker:tickers.demo); fi # one feed, not N
    start "node $i" "$run_dir/node$i.log" \
        "$broadcaster" serve --config "$here/node.toml" --port "$port" "${ticker[@]}"
done
for ((i = 0; i < nodes; i++)); do
    wait_listening "$((first_node + i))" 127.0.0.1 "$((base_port + i))"
done

start "nginx" "$run_dir/nginx.log" "$nginx" -e stderr -p "$run_dir/" -c "$run_dir/nginx.conf"
wait_listening "$((${#pids[@]} - 1))" "$nginx_reach" "$nginx_port"

front="$url_host:$nginx_port"
cat <<EOF
cluster ready: $nodes node(s) on 127.0.0.1:$base_port-$last_port, Redis $redis_url (prefix $prefix)
  WebSocket    ws://$front/ws
  ticker       http://$front/
  dashboard    http://$front/dashboard?token=$admin_token
               (one node's view, the node nginx picks; node 1's own: port $base_port instead)
  stats        curl -H "Authorization: Bearer \$(cat $run_dir/admin-token)" http://$front/stats
  admin token  $admin_token (also in $run_dir/admin-token)
  logs         $run_dir/*.log
Ctrl-C stops the cluster.
EOF

while true; do
    wait -n || true # a process exited (signals run the trap above instead)
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            show_death "$i"
            exit 1
        fi
    done
done
