#include "CLuaShim.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the counting allocator (maqet run --max-memory) ---------------------- */

/* Per state: bytes Lua holds, the limit (0: none), how deep the host (Swift) is below the
 * current Lua call, and whether the limit was ever reached. */
typedef struct {
    size_t used;
    size_t limit;
    int host_depth;
    int hit;
} mq_memory;

static void *mq_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    mq_memory *m = (mq_memory *)ud;
    size_t old = ptr ? osize : 0; /* with ptr == NULL, osize is the kind of object */
    if (nsize == 0) {
        free(ptr);
        m->used -= old;
        return NULL;
    }
    /* Only growth is refused, and never while Swift code runs: a refusal there would make
     * lua_push* raise, and longjmp over Swift frames. The trampoline checks once Swift returns. */
    if (m->limit != 0 && nsize > old && m->host_depth == 0 && m->used - old + nsize > m->limit) {
        m->hit = 1;
        return NULL; /* Lua collects garbage and retries once, then raises "not enough memory" */
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    m->used = m->used - old + nsize;
    return p;
}

/* The limit bookkeeping of L's state, or NULL when L was not made by mq_newstate. */
static mq_memory *mq_memory_of(lua_State *L) {
    void *ud = NULL;
    if (lua_getallocf(L, &ud) != mq_alloc) return NULL;
    return (mq_memory *)ud;
}

static int mq_panic(lua_State *L) {
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
    fprintf(stderr, "maqet: PANIC: unprotected error in call to Lua API (%s)\n", msg);
    fflush(stderr);
    return 0; /* Lua aborts */
}

/* Lua's warn(): off until a script says "@on", as in the stand-alone interpreter. */
static int mq_warnings_on = 0;
static int mq_warning_continues = 0;
static void mq_warn(void *ud, const char *msg, int tocont) {
    (void)ud;
    if (!mq_warning_continues && *msg == '@') {
        if (strcmp(msg, "@on") == 0) mq_warnings_on = 1;
        else if (strcmp(msg, "@off") == 0) mq_warnings_on = 0;
        return;
    }
    if (mq_warnings_on) {
        if (!mq_warning_continues) fputs("Lua warning: ", stderr);
        fputs(msg, stderr);
        if (!tocont) fputs("\n", stderr);
        fflush(stderr);
    }
    mq_warning_continues = tocont;
}

lua_State *mq_newstate(size_t limit_bytes) {
    mq_memory *m = calloc(1, sizeof *m);
    if (m == NULL) return NULL;
    m->limit = limit_bytes;
    lua_State *L = lua_newstate(mq_alloc, m);
    if (L == NULL) {
        free(m);
        return NULL;
    }
    lua_atpanic(L, mq_panic);
    lua_setwarnf(L, mq_warn, NULL);
    return L;
}

void mq_closestate(lua_State *L) {
    mq_memory *m = mq_memory_of(L);
    lua_close(L);
    free(m);
}

size_t mq_memory_limit(lua_State *L) {
    mq_memory *m = mq_memory_of(L);
    return m ? m->limit : 0;
}

size_t mq_memory_used(lua_State *L) {
    mq_memory *m = mq_memory_of(L);
    return m ? m->used : 0;
}

int mq_memory_limit_hit(lua_State *L) {
    mq_memory *m = mq_memory_of(L);
    return m ? m->hit : 0;
}

/* Pushes the message a script gets when it reaches the limit (allocated past the limit). */
static void mq_push_limit_message(lua_State *L, mq_memory *m) {
    m->host_depth++;
    lua_pushfstring(L, "out of memory (limit %d MiB; raise --max-memory)", (int)(m->limit / (1024 * 1024)));
    m->host_depth--;
}

/* ---- trampoline ---------------------------------------------------------- */

static int mq_trampoline(lua_State *L) {
    /* debug.setupvalue can replace the function pointer from a script: call only a light
     * userdata that is not NULL (every light userdata a script can reach is one of ours). */
    if (lua_type(L, lua_upvalueindex(1)) != LUA_TLIGHTUSERDATA || lua_touserdata(L, lua_upvalueindex(1)) == NULL) {
        return luaL_error(L, "maqet: this host function was altered (debug.setupvalue) and cannot run");
    }
    mq_swift_function fn = (mq_swift_function)lua_touserdata(L, lua_upvalueindex(1));
    mq_memory *m = mq_memory_of(L);
    if (m) m->host_depth++;
    int n = fn(L);
    if (m) {
        m->host_depth--;
        /* Swift may allocate past the limit (see mq_alloc); the script stops here instead. */
        if (m->limit != 0 && m->host_depth == 0 && m->used > m->limit) {
            m->hit = 1;
            mq_push_limit_message(L, m);
            return lua_error(L);
        }
    }
    if (n == MQ_RAISE) {
        /* Point the message at the caller's line, as luaL_error would. */
        if (lua_type(L, -1) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
        return lua_error(L); /* the Swift frame has returned: safe to longjmp */
    }
    if (n == MQ_RAISE_AS_IS) {
        return lua_error(L);
    }
    return n;
}

void mq_pushfunction(lua_State *L, mq_swift_function fn, int nup) {
    lua_pushlightuserdata(L, (void *)fn);
    if (nup > 0) {
        lua_insert(L, -(nup + 1));
    }
    lua_pushcclosure(L, mq_trampoline, nup + 1);
}

int mq_upvalue(int i) { return lua_upvalueindex(i + 1); }

/* ---- protected calls ----------------------------------------------------- */

static int mq_traceback(lua_State *L) {
    /* A maqet.error object carries an exit status: pass it through unchanged. */
    if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, "maqet.error");
        int is_maqet_error = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (is_maqet_error) {
            lua_settop(L, 1);
            return 1;
        }
    }
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int mq_pcall(lua_State *L, int nargs, int nresults) {
    int base = lua_gettop(L) - nargs; /* the function's index */
    lua_pushcfunction(L, mq_traceback);
    lua_insert(L, base);
    int status = mq_pcall_plain(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

int mq_pcall_plain(lua_State *L, int nargs, int nresults, int msgh) {
    /* Lua code called from Swift runs under the limit again; Swift resumes above it after. */
    mq_memory *m = mq_memory_of(L);
    int saved = m ? m->host_depth : 0;
    if (m) m->host_depth = 0;
    int status = lua_pcall(L, nargs, nresults, msgh);
    if (m) m->host_depth = saved;
    if (status == LUA_ERRMEM && m && m->hit && m->limit != 0) {
        /* Say which limit it was rather than Lua's bare "not enough memory". */
        lua_pop(L, 1);
        mq_push_limit_message(L, m);
    }
    return status;
}

/* ---- macro wrappers ------------------------------------------------------ */

int mq_registryindex(void) { return LUA_REGISTRYINDEX; }
void mq_pop(lua_State *L, int n) { lua_pop(L, n); }
void mq_newtable(lua_State *L) { lua_newtable(L); }
const char *mq_tostring(lua_State *L, int idx, size_t *len) { return lua_tolstring(L, idx, len); }
int mq_isnoneornil(lua_State *L, int idx) { return lua_isnoneornil(L, idx); }
void mq_remove(lua_State *L, int idx) { lua_remove(L, idx); }
void mq_insert(lua_State *L, int idx) { lua_insert(L, idx); }
void mq_replace(lua_State *L, int idx) { lua_replace(L, idx); }
void mq_getmetatable_named(lua_State *L, const char *name) { luaL_getmetatable(L, name); }

int mq_isinteger_value(lua_State *L, int idx, lua_Integer *out) {
    if (!lua_isinteger(L, idx)) return 0;
    *out = lua_tointeger(L, idx);
    return 1;
}

int mq_loadbuffer(lua_State *L, const char *buf, size_t len, const char *chunkname) {
    return luaL_loadbufferx(L, buf, len, chunkname, "t");
}

int mq_loadfile(lua_State *L, const char *path) {
    return luaL_loadfilex(L, path, "t");
}

void **mq_extraspace(lua_State *L) { return (void **)lua_getextraspace(L); }

/* ---- stop hook ----------------------------------------------------------- */

static volatile sig_atomic_t stop_reason = MQ_STOP_NONE;
static struct timespec deadline;
static int have_deadline = 0;
static struct sigaction previous_sigint;
static int sigint_installed = 0;

/* Sets stop_reason once the --timeout deadline has passed. */
static void mq_check_deadline(void) {
    if (stop_reason == MQ_STOP_NONE && have_deadline) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
            stop_reason = MQ_STOP_TIMEOUT;
        }
    }
}

/* Also checks the deadline, so Swift code blocking outside Lua (maqet.sleep, proc:wait) sees it. */
int mq_stop_reason(void) { mq_check_deadline(); return stop_reason; }
void mq_request_stop(int reason) { if (stop_reason == MQ_STOP_NONE) stop_reason = reason; }
void mq_reset_stop(void) { stop_reason = MQ_STOP_NONE; have_deadline = 0; }

static void mq_stop_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    mq_check_deadline();
    if (stop_reason != MQ_STOP_NONE) {
        /* From now on every instruction of this thread raises again. */
        lua_sethook(L, mq_stop_hook, LUA_MASKCOUNT, 1);
        if (stop_reason == MQ_STOP_TIMEOUT) {
            luaL_error(L, "script stopped: --timeout expired");
        } else {
            luaL_error(L, "script stopped: interrupted");
        }
    }
}

void mq_install_stop_hook(lua_State *L, double timeout_seconds) {
    if (timeout_seconds > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        double whole = (double)(time_t)timeout_seconds;
        deadline.tv_sec += (time_t)timeout_seconds;
        deadline.tv_nsec += (long)((timeout_seconds - whole) * 1e9);
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec += 1;
            deadline.tv_nsec -= 1000000000L;
        }
        have_deadline = 1;
    }
    /* Threads created later inherit the hook of the thread that creates them. */
    lua_sethook(L, mq_stop_hook, LUA_MASKCOUNT, 1000);
}

static void mq_on_sigint(int sig) {
    (void)sig;
    stop_reason = MQ_STOP_INTERRUPT;
}

void mq_install_sigint_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = mq_on_sigint;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, &previous_sigint) == 0) sigint_installed = 1;
}

void mq_restore_sigint_handler(void) {
    if (sigint_installed) {
        sigaction(SIGINT, &previous_sigint, NULL);
        sigint_installed = 0;
    }
}
