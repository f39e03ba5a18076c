import CLuaShim
import Foundation
import MaqetCore

/// `maqet.sleep(ms)` and `maqet.now()`, directly on `maqet`.
enum TimeModule {
    static let functions: [LuaRegistration] = [
        ("sleep", sleep),
        ("now", now),
    ]

    /// `maqet.sleep(ms)`: sleeps in slices of at most 50 ms; raises as soon as Ctrl-C or
    /// `--timeout` asks the script to stop.
    private static let sleep: LuaFunction = { L in
        Lua.call(L) { lua in
            guard let ms = lua.number(at: 1), ms.isFinite, ms >= 0 else {
                throw LuaUsageError("maqet.sleep: ms must be a number >= 0, got \(lua.type(at: 1) == LUA_TNUMBER ? "\(lua.number(at: 1)!)" : lua.typeName(at: 1))")
            }
            let deadline = monotonicMs() + Int64(min(ms, 1e15).rounded(.up)) // clamp: no Int64 overflow
            while true {
                if ProcessModule.stopRequested() { throw ProcessModule.stopError("maqet.sleep") }
                let left = deadline - monotonicMs()
                if left <= 0 { return 0 }
                var slice = timespec(tv_sec: 0, tv_nsec: Int(min(left, 50)) * 1_000_000)
                _ = nanosleep(&slice, nil) // EINTR (Ctrl-C) just ends this slice early
            }
        }
    }

    /// `maqet.now()`: seconds since the Unix epoch as a float (microsecond resolution).
    private static let now: LuaFunction = { L in
        Lua.call(L) { lua in
            var tv = timespec()
            clock_gettime(CLOCK_REALTIME, &tv)
            lua.push(Double(tv.tv_sec) + Double(tv.tv_nsec) / 1e9)
            return 1
        }
    }
}
