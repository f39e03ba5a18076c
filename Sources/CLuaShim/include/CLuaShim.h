/*
 * CLuaShim: the part of the Lua 5.4 C API that Swift cannot import directly
 * (function-like macros), plus the one place where Lua errors are raised on
 * behalf of Swift code (the trampoline) and the stop hook used for
 * --timeout and Ctrl-C.
 *
 * Rule: Swift never calls lua_error, luaL_error or luaL_check*: they longjmp
 * over Swift frames. A Swift function that Lua calls returns MQ_RAISE after
 * pushing an error value; the C trampoline raises it once the Swift frame is
 * gone.
 */
#ifndef MAQET_CLUASHIM_H
#define MAQET_CLUASHIM_H

#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>

/* Return value of a Swift function meaning "the value on top of the stack is an error: raise it". */
#define MQ_RAISE (-1)
/* Like MQ_RAISE, but the error value is raised unchanged (re-raising a caught error). */
#define MQ_RAISE_AS_IS (-2)

/* A Swift function callable from Lua: returns the number of results, or MQ_RAISE. */
typedef int (*mq_swift_function)(lua_State *L);

/* Pushes a Lua function that calls `fn` through the trampoline. `nup` values on
 * the stack become its upvalues 2..nup+1 (upvalue 1 holds `fn`). */
void mq_pushfunction(lua_State *L, mq_swift_function fn, int nup);

/* Index of the trampoline function's own upvalue i (1-based, user upvalues start at 1). */
int mq_upvalue(int i);

/* Calls the function below `nargs` arguments with a traceback message handler.
 * On error the stack holds one string: message plus traceback. */
int mq_pcall(lua_State *L, int nargs, int nresults);

/* lua_pcall with the host's memory bookkeeping (see mq_newstate); every Swift call into Lua
 * goes through it or mq_pcall. */
int mq_pcall_plain(lua_State *L, int nargs, int nresults, int msgh);

/* A state with the standard allocator plus a byte counter: allocations that would take Lua past
 * `limit_bytes` (0: no limit) fail, so a runaway script gets a memory error; the host's own
 * allocations while a Swift function runs are never refused (they would longjmp over Swift), the
 * trampoline raises "out of memory (limit N MiB; raise --max-memory)" once the function returns.
 * Close it with mq_closestate. */
lua_State *mq_newstate(size_t limit_bytes);
void mq_closestate(lua_State *L);
size_t mq_memory_limit(lua_State *L);
size_t mq_memory_used(lua_State *L);
/* Non-zero once an allocation was refused (or the trampoline stopped a script) for the limit. */
int mq_memory_limit_hit(lua_State *L);

/* Macro wrappers. */
int mq_registryindex(void);
void mq_pop(lua_State *L, int n);
void mq_newtable(lua_State *L);
const char *mq_tostring(lua_State *L, int idx, size_t *len);
int mq_isnoneornil(lua_State *L, int idx);
void mq_remove(lua_State *L, int idx);
void mq_insert(lua_State *L, int idx);
void mq_replace(lua_State *L, int idx);
void mq_getmetatable_named(lua_State *L, const char *name);
int mq_isinteger_value(lua_State *L, int idx, lua_Integer *out);
int mq_loadbuffer(lua_State *L, const char *buf, size_t len, const char *chunkname);
int mq_loadfile(lua_State *L, const char *path);
/* The per-state pointer slot (LUA_EXTRASPACE); coroutines inherit the main thread's value. */
void **mq_extraspace(lua_State *L);

/* Stop control: a count hook that every thread inherits checks a deadline and an
 * interrupt flag; once either fires, every further Lua instruction raises, so
 * pcall inside the script cannot swallow it. */
enum { MQ_STOP_NONE = 0, MQ_STOP_TIMEOUT = 1, MQ_STOP_INTERRUPT = 2 };
void mq_install_stop_hook(lua_State *L, double timeout_seconds /* <= 0: none */);
void mq_install_sigint_handler(void);
void mq_restore_sigint_handler(void);
int mq_stop_reason(void);
void mq_request_stop(int reason);
void mq_reset_stop(void);

#endif
