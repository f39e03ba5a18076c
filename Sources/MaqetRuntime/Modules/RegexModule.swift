import CLuaShim
import Glibc
import MaqetCore

/// A compiled POSIX extended regular expression (`maqet.regex.compile`). Freed by `:close()`,
/// `<close>` or when Lua collects it.
final class RegexHandle: LuaHandle {
    static let luaTypeName = "maqet.regex"
    let pattern: String
    private var compiled: UnsafeMutablePointer<regex_t>?

    init(pattern: String, compiled: UnsafeMutablePointer<regex_t>) {
        self.pattern = pattern
        self.compiled = compiled
    }

    deinit { close() }

    var isClosed: Bool { compiled == nil }

    func close() {
        guard let compiled else { return }
        regfree(compiled)
        compiled.deallocate()
        self.compiled = nil
    }

    /// The first match in `subject[start..<end]` (byte offsets), as a half-open byte range.
    /// The corresponding C function is `regexec` (with `REG_STARTEND`: NUL bytes are ordinary
    /// bytes, and `^` looks at the byte before `start`).
    func firstMatch(in subject: UnsafeRawBufferPointer, from start: Int) -> Range<Int>? {
        guard let compiled else { return nil }
        var match = regmatch_t(rm_so: regoff_t(start), rm_eo: regoff_t(subject.count))
        let base = subject.baseAddress?.assumingMemoryBound(to: CChar.self)
        let rc: Int32
        if let base {
            rc = regexec(compiled, base, 1, &match, REG_STARTEND)
        } else {
            rc = "".withCString { regexec(compiled, $0, 1, &match, REG_STARTEND) }
        }
        guard rc == 0 else { return nil }
        return Int(match.rm_so)..<Int(match.rm_eo)
    }
}

/// `maqet.regex`: POSIX extended regular expressions (`regcomp`/`regexec`), matched on bytes.
/// Console waits use it (`maqet wait --console REGEX`, `console:expect`), so a pattern means
/// the same in a shell script and in Lua.
enum RegexModule {
    static let functions: [LuaRegistration] = [
        ("compile", compile),
    ]

    static let methods: [LuaRegistration] = [
        ("find", find),
    ]

    static func registerTypes(_ lua: Lua) {
        lua.registerHandleType(RegexHandle.self, methods: methods)
    }

    /// Compiles `pattern` (REG_EXTENDED | REG_NEWLINE: `^`/`$` also match at line breaks, `.`
    /// does not match a newline). A pattern `regcomp` rejects is an expected failure.
    static func compile(_ pattern: String) -> Result<RegexHandle, CompileError> {
        let compiled = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
        let rc = regcomp(compiled, pattern, REG_EXTENDED | REG_NEWLINE)
        guard rc == 0 else {
            var buffer = [CChar](repeating: 0, count: 256)
            regerror(rc, compiled, &buffer, buffer.count)
            compiled.deallocate()
            return .failure(CompileError(message: "invalid regular expression '\(pattern)': \(String(cString: buffer))"))
        }
        return .success(RegexHandle(pattern: pattern, compiled: compiled))
    }

    struct CompileError: Error { var message: String }

    /// `maqet.regex.compile(pattern)`: a regex handle, or `nil, "invalid regular expression …", "EREGEX"`.
    private static let compile: LuaFunction = { L in
        Lua.call(L) { lua in
            let pattern = try lua.checkString(1, "maqet.regex.compile", "pattern")
            guard !pattern.utf8.contains(0) else {
                throw LuaUsageError("maqet.regex.compile: pattern must not contain a NUL byte")
            }
            switch compile(pattern) {
            case .success(let handle):
                lua.pushHandle(handle)
                return 1
            case .failure(let error):
                return lua.fail(error.message, code: "EREGEX")
            }
        }
    }

    /// `re:find(subject [, init])`: `start, end` of the first match at or after byte `init`
    /// (1-based, inclusive, like `string.find`), or nil.
    private static let find: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "re:find"
            let handle = try lua.handle(1, RegexHandle.self, function)
            guard lua.type(at: 2) == LUA_TSTRING else {
                throw LuaUsageError("\(function): subject must be a string, got \(lua.typeName(at: 2))")
            }
            let initial = try lua.optInteger(3, function, "init") ?? 1
            var length = 0
            let bytes = mq_tostring(lua.L, 2, &length)
            let subject = UnsafeRawBufferPointer(start: bytes, count: length)
            guard initial >= 1, initial <= Int64(length) + 1 else {
                lua.pushNil()
                return 1
            }
            guard let range = handle.firstMatch(in: subject, from: Int(initial - 1)) else {
                lua.pushNil()
                return 1
            }
            lua.push(range.lowerBound + 1)
            lua.push(range.upperBound)
            return 2
        }
    }
}
