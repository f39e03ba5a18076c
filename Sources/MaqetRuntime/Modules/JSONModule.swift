import CLuaShim
import MaqetCore

/// `maqet.json`: encode Lua values as JSON and decode JSON into Lua values.
///
/// Mapping: a table whose keys are exactly 1..n is an array; any other table is an object with
/// its keys sorted (integer and float keys are written as strings); an empty table is `{}` unless
/// it carries the array marker (`maqet.json.array(t)`, also set on every decoded array).
/// JSON `null` is `maqet.json.null`, a light userdata (NULL pointer) distinct from every other value.
enum JSONModule {
    static let functions: [LuaRegistration] = [
        ("encode", encode),
        ("decode", decode),
        ("array", array),
    ]

    /// Registry name of the metatable that marks a table as a JSON array.
    static let arrayMarker = "maqet.json.array"

    static func registerTypes(_ lua: Lua) {
        if luaL_newmetatable(lua.L, arrayMarker) != 0 {
            lua.push("array")
            lua.setRawField(-2, "__jsontype")
        }
        lua.pop()
    }

    /// Adds the non-function fields to the module table at `index` (`maqet.json.null`).
    static func installFields(_ lua: Lua, moduleAt index: Int32) {
        let table = lua.absolute(index)
        lua_pushlightuserdata(lua.L, nil)
        lua.setRawField(table, "null")
    }

    // MARK: Lua -> JSON

    /// Converts Lua values to `JSONValue` (also used by `maqet.qmp` for command arguments).
    struct Encoder {
        let lua: Lua
        /// Named in the errors it raises.
        var function = "maqet.json.encode"
        /// `lua_topointer` of the tables on the current path (cycle detection).
        var path: Set<UnsafeRawPointer> = []

        mutating func value(at index: Int32, depth: Int) throws -> JSONValue {
            let f = function
            let L = lua.L
            switch lua.type(at: index) {
            case LUA_TNIL: return .null
            case LUA_TBOOLEAN: return .bool(lua.boolean(at: index))
            case LUA_TNUMBER:
                if lua.isInteger(at: index), let i = lua.integer(at: index) { return .integer(i) }
                let d = lua.number(at: index)!
                guard d.isFinite else { throw LuaUsageError("\(f): cannot encode \(d) (JSON has no NaN or infinity)") }
                return .double(d)
            case LUA_TSTRING:
                return .string(try string(at: index))
            case LUA_TLIGHTUSERDATA where lua_touserdata(L, index) == nil:
                return .null
            case LUA_TTABLE:
                break
            default:
                throw LuaUsageError("\(f): cannot encode a \(lua.typeName(at: index)) value")
            }
            guard depth < JSONValue.maximumDepth, lua_checkstack(L, 6) != 0 else {
                throw LuaUsageError("\(f): tables nested deeper than \(JSONValue.maximumDepth) levels")
            }
            let table = lua.absolute(index)
            guard let pointer = lua_topointer(L, table) else { throw LuaUsageError("\(f): cannot encode this table") }
            guard !path.contains(pointer) else { throw LuaUsageError("\(f): cannot encode a table that contains itself (cycle)") }
            path.insert(pointer)
            defer { path.remove(pointer) }

            // Collect the keys first; decide array or object afterwards.
            var count = 0
            var maxIndex: Int64 = 0
            var allPositiveIntegers = true
            lua.pushNil()
            while lua_next(L, table) != 0 {
                lua.pop() // value
                count += 1
                if lua.isInteger(at: -1), let i = lua.integer(at: -1), i >= 1 {
                    maxIndex = max(maxIndex, i)
                } else {
                    allPositiveIntegers = false
                }
            }
            let marked = isMarkedArray(table)
            if (count > 0 && allPositiveIntegers && maxIndex == Int64(count)) || (marked && count == 0) {
                var items: [JSONValue] = []
                items.reserveCapacity(count)
                for i in 1...max(count, 1) where count > 0 {
                    _ = lua.rawIndex(table, Int64(i))
                    defer { lua.pop() }
                    items.append(try value(at: -1, depth: depth + 1))
                }
                return .array(items)
            }
            if marked { throw LuaUsageError("\(f): a table marked with maqet.json.array has keys other than 1..n") }

            var members: [(key: String, value: JSONValue)] = []
            var seen: Set<String> = []
            lua.pushNil()
            while lua_next(L, table) != 0 {
                let key: String
                switch lua.type(at: -2) {
                case LUA_TSTRING: key = try string(at: -2)
                case LUA_TNUMBER:
                    if lua.isInteger(at: -2), let i = lua.integer(at: -2) {
                        key = String(i)
                    } else {
                        key = try JSONValue.formatDouble(lua.number(at: -2)!)
                    }
                default:
                    throw LuaUsageError("\(f): object keys must be strings or numbers, got a \(lua.typeName(at: -2)) key")
                }
                guard seen.insert(key).inserted else { throw LuaUsageError("\(f): key \"\(key)\" appears twice (as a string and as a number)") }
                members.append((key, try value(at: -1, depth: depth + 1)))
                lua.pop()
            }
            members.sort { $0.key < $1.key }
            return .object(members)
        }

        func string(at index: Int32) throws -> String {
            var length = 0
            let p = mq_tostring(lua.L, index, &length)!
            guard let s = String(validating: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self) else {
                throw LuaUsageError("\(function): strings must be valid UTF-8")
            }
            return s
        }

        func isMarkedArray(_ table: Int32) -> Bool {
            guard lua_getmetatable(lua.L, table) != 0 else { return false }
            mq_getmetatable_named(lua.L, arrayMarker)
            defer { lua.pop(2) }
            return lua_rawequal(lua.L, -1, -2) != 0
        }
    }

    // MARK: JSON -> Lua

    /// Pushes `value` as Lua values (also used by `maqet.qmp` for replies and events). With
    /// `ordered`, every object also gets a metatable whose `__keys` lists its keys in document
    /// order, the convention maqet.yaml's mappings follow.
    static func push(_ lua: Lua, _ value: JSONValue, ordered: Bool = false) throws {
        guard lua_checkstack(lua.L, 4) != 0 else { throw LuaUsageError("maqet.json.decode: nesting too deep") }
        switch value {
        case .null: lua_pushlightuserdata(lua.L, nil)
        case .bool(let b): lua.push(b)
        case .integer(let i): lua.push(i)
        case .double(let d): lua.push(d)
        case .string(let s): lua.push(s)
        case .array(let items):
            lua.newTable(arrayCount: Int32(clamping: items.count))
            for (i, item) in items.enumerated() {
                try push(lua, item, ordered: ordered)
                lua.setRawIndex(-2, Int64(i + 1))
            }
            mq_getmetatable_named(lua.L, arrayMarker)
            lua_setmetatable(lua.L, -2)
        case .object(let members):
            lua.newTable(recordCount: Int32(clamping: members.count))
            for member in members {
                try push(lua, member.value, ordered: ordered)
                lua.setRawField(-2, member.key) // a repeated key: the last one wins
            }
            if ordered {
                lua.newTable(arrayCount: 0, recordCount: 1)
                lua.newTable(arrayCount: Int32(clamping: members.count))
                var seen = Set<String>(), n: Int64 = 0
                for member in members where seen.insert(member.key).inserted {
                    n += 1
                    lua.push(member.key)
                    lua.setRawIndex(-2, n)
                }
                lua.setRawField(-2, "__keys")
                lua_setmetatable(lua.L, -2)
            }
        }
    }

    // MARK: Functions

    /// `maqet.json.encode(value [, opts])`: the JSON text; `opts.indent` pretty-prints.
    private static let encode: LuaFunction = { L in
        Lua.call(L) { lua in
            if lua.top < 1 { throw LuaUsageError("maqet.json.encode: value expected") }
            var indent = 0
            if try lua.optTable(2, "maqet.json.encode", "opts") {
                indent = Int(try lua.integerField(2, "indent", "maqet.json.encode") ?? 0)
                if indent < 0 || indent > 16 { throw LuaUsageError("maqet.json.encode: indent must be between 0 and 16") }
            }
            var encoder = Encoder(lua: lua)
            let value = try encoder.value(at: 1, depth: 0)
            do {
                lua.push(try value.serialized(indent: indent))
            } catch {
                throw LuaUsageError("maqet.json.encode: \(error)")
            }
            return 1
        }
    }

    /// `maqet.json.decode(text)`: the value, or `nil, "maqet.json.decode: … at line L column C", "EJSON"`.
    private static let decode: LuaFunction = { L in
        Lua.call(L) { lua in
            guard lua.type(at: 1) == LUA_TSTRING else {
                throw LuaUsageError("maqet.json.decode: text must be a string, got \(lua.typeName(at: 1))")
            }
            var ordered = false
            if !lua.isNoneOrNil(2) {
                try lua.checkTable(2, "maqet.json.decode", "opts")
                _ = lua.rawField(2, "ordered") // raw: an __index of the script's cannot raise here
                ordered = lua_toboolean(lua.L, -1) != 0
                lua.pop()
            }
            var length = 0
            let p = mq_tostring(lua.L, 1, &length)!
            let bytes = Array(UnsafeRawBufferPointer(start: p, count: length))
            do {
                try push(lua, try JSONValue.parse(bytes: bytes), ordered: ordered)
                return 1
            } catch let error as JSONSyntaxError {
                return lua.fail("maqet.json.decode: \(error)", code: "EJSON")
            }
        }
    }

    /// `maqet.json.array([t])`: marks `t` (or a new table) so it encodes as an array even when empty.
    private static let array: LuaFunction = { L in
        Lua.call(L) { lua in
            if lua.isNoneOrNil(1) {
                lua.top = 0
                lua.newTable()
            } else {
                try lua.checkTable(1, "maqet.json.array", "t")
                lua.top = 1
            }
            mq_getmetatable_named(lua.L, arrayMarker)
            lua_setmetatable(lua.L, -2)
            return 1
        }
    }
}
