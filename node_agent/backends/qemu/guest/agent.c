/*
 * slicemesh guest agent: PID 1 of a VM sliver (after the initramfs's init switched root).
 *
 * Jobs: run the sliver's command (output on the serial console, which the host logs) and
 * report how it ends on the "events" port; serve exec requests from the host on the
 * "agent" port; power the guest off when the command ends or the host asks (ACPI power
 * button, as QMP system_powerdown sends it, or poweroff/reboot from inside).
 *
 * Protocol on the agent port (virtio-serial, org.slicemesh.agent.0): frames of a 12-byte
 * big-endian header {u16 magic 0x534D, u8 type, u8 flags, u32 channel, u32 length} and a
 * payload of at most 16 KiB. docs/guest-agent.md describes every type; the host side is
 * node_agent/backends/qemu/protocol.py. One host connection at a time: a HELLO starts a
 * connection and ends every session of the previous one, as does the host going away.
 *
 * One thread, one poll loop; signals arrive through a signalfd. Built static by `make setup`.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x534D
#define HDR 12
#define MAX_PAYLOAD 16384
#define MAX_SESSIONS 32
#define MAX_INPUTS 4
#define OUTBUF (4 * (HDR + MAX_PAYLOAD))
#define STDIN_MAX (256 * 1024)

enum { T_HELLO = 0x01, T_EXEC = 0x02, T_STDIN = 0x03, T_SIGNAL = 0x04, T_STAT = 0x05 };
enum { T_HELLO_ACK = 0x81, T_STDOUT = 0x82, T_STDERR = 0x83, T_EXIT = 0x84, T_ERROR = 0x85, T_STAT_REPLY = 0x86 };
enum { F_STDIN = 0x01 };

struct session {
    uint32_t chan;
    pid_t pid;
    int out, err, in; /* -1 once closed */
    int code;         /* exit code, 128+signal when killed; valid once exited */
    int exited;
    char *inq;        /* stdin bytes not yet taken by the child */
    size_t inq_len;
    int in_eof;       /* host sent end of stdin: close once inq is written */
};

static struct session sessions[MAX_SESSIONS];
static int port = -1, events = -1, sigfd = -1, connected = 0;
static int inputs[MAX_INPUTS], ninputs = 0;
static unsigned char inbuf[HDR + MAX_PAYLOAD], outbuf[OUTBUF];
static size_t inlen = 0, outlen = 0;
static char **cmd_argv, **cmd_env;
static pid_t main_pid = -1;
static int stopping = 0, stop_grace = 5, main_ended = 0;
static struct timespec stop_deadline;

static void logmsg(const char *fmt, const char *arg) {
    char line[512];
    snprintf(line, sizeof line, fmt, arg);
    dprintf(2, "slicemesh-agent: %s\n", line);
}

static char *slurp(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) buf = realloc(buf, (cap *= 2) + 1);
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* "a\0b\0" -> {"a", "b", ...extra, NULL}; the strings stay in ``buf``. */
static char **split0(char *buf, size_t len, char **extra) {
    size_t count = 0, n_extra = 0;
    for (size_t i = 0; i < len; i++) count += buf[i] == 0;
    while (extra && extra[n_extra]) n_extra++;
    char **v = calloc(count + n_extra + 1, sizeof *v), **p = v;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) *p++ = buf + i;
    for (size_t i = 0; extra && i < n_extra; i++) *p++ = extra[i];
    return v;
}

static int open_port(const char *want, int flags) {
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    int fd = -1;
    while (d && fd < 0 && (e = readdir(d))) {
        char path[300], name[128] = "";
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int nf = open(path, O_RDONLY | O_CLOEXEC);
        if (nf < 0) continue;
        ssize_t r = read(nf, name, sizeof name - 1);
        close(nf);
        if (r > 0 && name[r - 1] == '\n') name[r - 1] = 0;
        if (strcmp(name, want) == 0) {
            snprintf(path, sizeof path, "/dev/%s", e->d_name);
            fd = open(path, flags | O_CLOEXEC);
        }
    }
    if (d) closedir(d);
    return fd;
}

static void event(const char *json) {
    if (events >= 0 && write(events, json, strlen(json)) < 0) logmsg("events port: %s", strerror(errno));
}

/* -- frames out ------------------------------------------------------------------------ */

static void put32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static uint32_t get32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int room(size_t payload) { return connected && outlen + HDR + payload <= OUTBUF; }

static void frame(int type, uint32_t chan, const void *data, size_t len) {
    if (!room(len)) return; /* disconnected: nobody to tell; callers check room() for data */
    unsigned char *h = outbuf + outlen;
    h[0] = MAGIC >> 8; h[1] = MAGIC & 0xff; h[2] = (unsigned char)type; h[3] = 0;
    put32(h + 4, chan);
    put32(h + 8, (uint32_t)len);
    memcpy(h + HDR, data, len);
    outlen += HDR + len;
}

static void flush_out(void) {
    while (outlen) {
        ssize_t w = write(port, outbuf, outlen);
        if (w <= 0) return; /* EAGAIN: poll for POLLOUT */
        memmove(outbuf, outbuf + w, outlen - (size_t)w);
        outlen -= (size_t)w;
    }
}

/* -- sessions -------------------------------------------------------------------------- */

static void close_fd(int *fd) { if (*fd >= 0) { close(*fd); *fd = -1; } }

static void end_session(struct session *s, int kill_it) {
    if (kill_it && s->pid > 0 && !s->exited) kill(-s->pid, SIGKILL);
    close_fd(&s->out); close_fd(&s->err); close_fd(&s->in);
    free(s->inq);
    /* a killed child not yet reaped keeps its pid here so SIGCHLD finds and frees the slot */
    if (!kill_it || s->exited) memset(s, 0, sizeof *s);
    else { s->chan = 0; s->inq = NULL; s->inq_len = 0; }
}

static void reset_connection(void) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i].pid) end_session(&sessions[i], 1);
    inlen = outlen = 0;
}

static struct session *find(uint32_t chan) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i].pid && sessions[i].chan == chan) return &sessions[i];
    return NULL;
}

static void finish_if_done(struct session *s) {
    if (s->exited && s->out < 0 && s->err < 0 && s->chan && room(4)) {
        unsigned char c[4];
        put32(c, (uint32_t)s->code);
        frame(T_EXIT, s->chan, c, 4);
        end_session(s, 0);
    }
}

static void refuse(uint32_t chan, const char *why, int code) {
    unsigned char c[4];
    frame(T_ERROR, chan, why, strlen(why));
    put32(c, (uint32_t)code);
    frame(T_EXIT, chan, c, 4);
}

static void start_exec(uint32_t chan, int flags, unsigned char *p, size_t len) {
    if (len < 8) return refuse(chan, "malformed exec request", 125);
    uint32_t argc = get32(p), envc = get32(p + 4);
    char *strs = (char *)p + 8;
    size_t slen = len - 8, count = 0;
    if (slen == 0 || strs[slen - 1] != 0) return refuse(chan, "malformed exec request", 125);
    for (size_t i = 0; i < slen; i++) count += strs[i] == 0;
    if (argc == 0 || count != (size_t)argc + envc) return refuse(chan, "malformed exec request", 125);
    if (chan == 0 || find(chan)) return refuse(chan, "channel 0 or already in use", 125);
    struct session *s = NULL;
    for (int i = 0; i < MAX_SESSIONS && !s; i++) if (!sessions[i].pid) s = &sessions[i];
    if (!s) return refuse(chan, "too many exec sessions", 125);
    char **args = split0(strs, slen, NULL); /* argv..., then the request's env... */
    size_t n_sliver = 0;
    while (cmd_env[n_sliver]) n_sliver++;
    /* the request's env first: getenv() takes the first of duplicates, so it wins */
    char **env = calloc(envc + n_sliver + 1, sizeof *env);
    memcpy(env, args + argc, envc * sizeof *env);
    memcpy(env + envc, cmd_env, n_sliver * sizeof *env);
    args[argc] = NULL;
    int o[2], e[2], in[2];
    if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) {
        free(args); free(env);
        return refuse(chan, "pipe failed", 125);
    }
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid();
        int devnull = open("/dev/null", O_RDONLY);
        dup2((flags & F_STDIN) ? in[0] : devnull, 0);
        dup2(o[1], 1);
        dup2(e[1], 2);
        if (chdir("/root") != 0 && chdir("/") != 0) _exit(125);
        environ = env;
        execvp(args[0], args);
        dprintf(2, "slicemesh-agent: %s: %s\n", args[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    free(args); free(env);
    close(o[1]); close(e[1]); close(in[0]);
    if (pid < 0) {
        close(o[0]); close(e[0]); close(in[1]);
        return refuse(chan, "fork failed", 125);
    }
    fcntl(o[0], F_SETFL, O_NONBLOCK);
    fcntl(e[0], F_SETFL, O_NONBLOCK);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    *s = (struct session){.chan = chan, .pid = pid, .out = o[0], .err = e[0], .in = in[1]};
    if (!(flags & F_STDIN)) close_fd(&s->in);
}

static void push_stdin(struct session *s) {
    while (s->in >= 0 && s->inq_len) {
        ssize_t w = write(s->in, s->inq, s->inq_len);
        if (w < 0 && errno == EAGAIN) return;
        if (w <= 0) { s->inq_len = 0; close_fd(&s->in); return; } /* EPIPE: the child closed it */
        memmove(s->inq, s->inq + w, s->inq_len - (size_t)w);
        s->inq_len -= (size_t)w;
    }
    if (s->in_eof && !s->inq_len) close_fd(&s->in);
}

static void send_stat(uint32_t chan) {
    size_t len;
    char *mem = slurp("/proc/meminfo", &len);
    if (mem) frame(T_STAT_REPLY, chan, mem, len < MAX_PAYLOAD ? len : MAX_PAYLOAD);
    free(mem);
}

static void handle(int type, int flags, uint32_t chan, unsigned char *p, size_t len) {
    struct session *s = chan ? find(chan) : NULL;
    switch (type) {
    case T_HELLO: /* a new host connection: nothing of the previous one survives */
        for (int i = 0; i < MAX_SESSIONS; i++) if (sessions[i].pid) end_session(&sessions[i], 1);
        outlen = 0;
        frame(T_HELLO_ACK, 0, p, len);
        break;
    case T_EXEC: start_exec(chan, flags, p, len); break;
    case T_STDIN:
        if (!s || s->in < 0) break;
        if (len == 0) s->in_eof = 1;
        else if (s->inq_len + len > STDIN_MAX) { refuse(chan, "stdin backlog over 256 KiB", 125); end_session(s, 1); break; }
        else { s->inq = realloc(s->inq, s->inq_len + len); memcpy(s->inq + s->inq_len, p, len); s->inq_len += len; }
        push_stdin(s);
        break;
    case T_SIGNAL:
        if (s && len == 4 && !s->exited) kill(-s->pid, (int)get32(p));
        break;
    case T_STAT: send_stat(chan); break;
    default: frame(T_ERROR, chan, "unknown frame type", 18);
    }
}

static void read_port(void) {
    for (;;) {
        ssize_t r = read(port, inbuf + inlen, sizeof inbuf - inlen);
        if (r == 0) { connected = 0; reset_connection(); return; } /* the host went away */
        if (r < 0) return;
        inlen += (size_t)r;
        while (inlen >= HDR) {
            uint32_t len = get32(inbuf + 8);
            if (((inbuf[0] << 8) | inbuf[1]) != MAGIC || len > MAX_PAYLOAD) { /* out of step: drop it all */
                inlen = 0;
                frame(T_ERROR, 0, "bad frame", 9);
                break;
            }
            if (inlen < HDR + len) break;
            handle(inbuf[2], inbuf[3], get32(inbuf + 4), inbuf + HDR, len);
            memmove(inbuf, inbuf + HDR + len, inlen - HDR - len);
            inlen -= HDR + len;
        }
    }
}

static void probe_host(void) {
    struct pollfd p = {.fd = port, .events = POLLIN};
    if (port >= 0 && poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP)) connected = 1;
}

/* One read of a session's output into a frame; 0 when nothing came (no room, or EAGAIN). */
static int pump(struct session *s, int *fd, int type) {
    unsigned char buf[MAX_PAYLOAD];
    if (!room(MAX_PAYLOAD)) return 0;
    ssize_t r = read(*fd, buf, sizeof buf);
    if (r > 0) frame(type, s->chan, buf, (size_t)r);
    else if (r == 0 || errno != EAGAIN) close_fd(fd);
    else return 0;
    return 1;
}

/* -- the sliver's command and power ---------------------------------------------------- */

static void begin_stop(const char *why) {
    if (stopping) return;
    stopping = 1;
    char msg[96];
    snprintf(msg, sizeof msg, "{\"event\": \"stopping\", \"why\": \"%s\"}\n", why);
    event(msg);
    if (main_pid > 0) kill(-main_pid, SIGTERM);
    clock_gettime(CLOCK_MONOTONIC, &stop_deadline);
    stop_deadline.tv_sec += stop_grace;
}

/* Records every child that ended; -1 once none is left. */
static int reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
        if (pid == main_pid) {
            char msg[64];
            if (WIFSIGNALED(status)) snprintf(msg, sizeof msg, "{\"event\": \"exit\", \"signal\": %d}\n", WTERMSIG(status));
            else snprintf(msg, sizeof msg, "{\"event\": \"exit\", \"code\": %d}\n", code);
            event(msg);
            main_pid = -1;
            main_ended = 1; /* the power goes once this turn's exits are recorded: an exec that ended with it still answers */
        }
        for (int i = 0; i < MAX_SESSIONS; i++)
            if (sessions[i].pid == pid) {
                sessions[i].exited = 1;
                sessions[i].code = code;
                if (!sessions[i].chan) memset(&sessions[i], 0, sizeof sessions[i]); /* its host is gone */
            }
    }
    return pid < 0 ? -1 : 0;
}

static int flush_until(const struct timespec *end) {
    while (outlen && connected) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (end->tv_sec - now.tv_sec) * 1000 + (end->tv_nsec - now.tv_nsec) / 1000000;
        struct pollfd p = {.fd = port, .events = POLLOUT};
        if (ms <= 0 || poll(&p, 1, (int)ms) <= 0 || (p.revents & (POLLERR | POLLHUP))) return 0;
        flush_out();
    }
    return outlen == 0;
}

/* Before the power goes, every exec the host still waits for gets the rest of its output and
 * its EXIT: its own code if it had ended, 128+signal if the power-off ended it. Without this
 * the host would see only the connection drop, even for a command that had finished. */
static void answer_sessions(void) {
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += 1;
    for (int i = 0; i < MAX_SESSIONS; i++) {
        struct session *s = &sessions[i];
        if (!s->chan || !connected) continue;
        if (!s->exited) { s->exited = 1; s->code = 128 + SIGKILL; } /* not reaped in time: killed all the same */
        close_fd(&s->in);
        while (s->out >= 0 || s->err >= 0) { /* every writer is dead: data, then end of file */
            if (!room(MAX_PAYLOAD) && !flush_until(&end)) return;
            int *fd = s->out >= 0 ? &s->out : &s->err;
            if (!pump(s, fd, fd == &s->out ? T_STDOUT : T_STDERR)) close_fd(fd); /* EAGAIN: no writer is left to wait for */
        }
        if (!room(4) && !flush_until(&end)) return;
        finish_if_done(s);
    }
    flush_until(&end);
}

static void power_off(void) {
    /* everything else gets a second to exit on SIGTERM, then SIGKILL; the host hears how each
     * exec ended; then the disk is synced */
    kill(-1, SIGTERM);
    struct timespec step = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 100 && reap() >= 0; i++) nanosleep(&step, NULL);
    kill(-1, SIGKILL);
    for (int i = 0; i < 100 && reap() >= 0; i++) nanosleep(&step, NULL);
    answer_sessions();
    sync();
    reboot(RB_POWER_OFF);
    _exit(1);
}

static void start_main(void) {
    main_pid = fork();
    if (main_pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid();
        int fd = open("/dev/console", O_RDWR);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        if (chdir("/root") != 0 && chdir("/") != 0) _exit(125);
        environ = cmd_env;
        execvp(cmd_argv[0], cmd_argv);
        dprintf(2, "slicemesh-agent: %s: %s\n", cmd_argv[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    char msg[64];
    snprintf(msg, sizeof msg, "{\"event\": \"running\", \"pid\": %d}\n", (int)main_pid);
    event(msg);
}

static void open_inputs(void) {
    for (int i = 0; i < 8 && ninputs < MAX_INPUTS; i++) {
        char path[32];
        snprintf(path, sizeof path, "/dev/input/event%d", i);
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) inputs[ninputs++] = fd;
    }
}

static void read_input(int fd) {
    struct input_event ev;
    while (read(fd, &ev, sizeof ev) == (ssize_t)sizeof ev)
        if (ev.type == EV_KEY && ev.code == KEY_POWER && ev.value == 1) begin_stop("power button");
}

int main(void) {
    size_t alen = 0, elen = 0;
    char *a = slurp("/run/slicemesh/argv", &alen), *e = slurp("/run/slicemesh/env", &elen);
    size_t glen = 0;
    char *g = slurp("/run/slicemesh/stop_grace", &glen);
    if (g) stop_grace = atoi(g) > 0 ? atoi(g) : stop_grace;
    if (!a || !alen) { logmsg("%s", "no command in /run/slicemesh/argv"); power_off(); }
    static char *defaults[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=linux", NULL};
    cmd_argv = split0(a, alen, NULL);
    static char empty[1];
    cmd_env = split0(e ? e : empty, elen, defaults);

    sigset_t mask;
    sigemptyset(&mask);
    int sigs[] = {SIGCHLD, SIGIO, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPWR, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&mask, sigs[i]);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);

    events = open_port("org.slicemesh.events.0", O_WRONLY);
    port = open_port("org.slicemesh.agent.0", O_RDWR | O_NONBLOCK);
    if (port < 0) logmsg("%s", "no agent port: exec is unavailable");
    else {
        fcntl(port, F_SETOWN, getpid());
        fcntl(port, F_SETFL, O_RDWR | O_NONBLOCK | O_ASYNC);
        probe_host();
    }
    open_inputs();
    start_main();

    for (;;) {
        struct pollfd fds[3 + MAX_INPUTS + 3 * MAX_SESSIONS];
        struct { struct session *s; int which; } who[3 * MAX_SESSIONS];
        int n = 0, nw = 0;
        fds[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
        /* a disconnected port reports POLLHUP at once and forever: leave it out until SIGIO */
        fds[n++] = (struct pollfd){.fd = connected ? port : -1, .events = POLLIN | (outlen ? POLLOUT : 0)};
        for (int i = 0; i < ninputs; i++) fds[n++] = (struct pollfd){.fd = inputs[i], .events = POLLIN};
        int base = n;
        for (int i = 0; i < MAX_SESSIONS; i++) {
            struct session *s = &sessions[i];
            if (!s->chan) continue;
            int ok = room(MAX_PAYLOAD);
            if (s->out >= 0 && ok) { who[nw].s = s; who[nw++].which = 1; fds[n++] = (struct pollfd){.fd = s->out, .events = POLLIN}; }
            if (s->err >= 0 && ok) { who[nw].s = s; who[nw++].which = 2; fds[n++] = (struct pollfd){.fd = s->err, .events = POLLIN}; }
            if (s->in >= 0 && s->inq_len) { who[nw].s = s; who[nw++].which = 0; fds[n++] = (struct pollfd){.fd = s->in, .events = POLLOUT}; }
        }
        int timeout = connected ? -1 : 1000; /* SIGIO says when the host connects; this is a fallback */
        if (stopping) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (stop_deadline.tv_sec - now.tv_sec) * 1000 + (stop_deadline.tv_nsec - now.tv_nsec) / 1000000;
            if (ms <= 0) power_off();
            timeout = timeout < 0 || ms < timeout ? (int)ms : timeout;
        }
        if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) continue;
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGCHLD) reap();
                else if (si.ssi_signo == SIGIO) { if (!connected) probe_host(); }
                else if (si.ssi_signo != SIGHUP) begin_stop("signal");
            }
        }
        if (main_ended) power_off();
        if (!connected) probe_host();
        else if (fds[1].revents & (POLLIN | POLLHUP)) read_port();
        for (int i = 0; i < ninputs; i++) if (fds[2 + i].revents & POLLIN) read_input(inputs[i]);
        for (int i = 0; i < nw; i++) {
            struct pollfd *f = &fds[base + i];
            if (!f->revents || !who[i].s->chan || f->fd < 0) continue;
            if (who[i].which == 1 && who[i].s->out == f->fd) pump(who[i].s, &who[i].s->out, T_STDOUT);
            else if (who[i].which == 2 && who[i].s->err == f->fd) pump(who[i].s, &who[i].s->err, T_STDERR);
            else if (who[i].which == 0 && who[i].s->in == f->fd) push_stdin(who[i].s);
        }
        for (int i = 0; i < MAX_SESSIONS; i++) if (sessions[i].chan) finish_if_done(&sessions[i]);
        if (connected) flush_out();
    }
}
