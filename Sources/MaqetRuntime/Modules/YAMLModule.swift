import CLuaShim
import Foundation
import MaqetCore
import Yams

/// `maqet.yaml`: YAML (VM definitions) into Lua values, with the YAML 1.2 core schema.
///
/// Mapping: a mapping is a table (keys are the key scalars' text), a sequence a table marked as a
/// JSON array (so it re-encodes as `[...]`, `[]` when empty), `null`/`~`/empty is `maqet.json.null`,
/// `true`/`false` booleans, `12`/`0x1f`/`0o17` integers, `1.5`/`.inf` floats, anything else (also
/// `yes`, `no`, `on`, `off`: YAML 1.2, not 1.1) a string; quoted scalars are always strings.
/// Anchors and aliases are resolved, merge keys (`<<: *base`) merged. Each mapping has a metatable
/// whose `__keys` lists its keys in document order (merged keys last).
enum YAMLModule {
    static let functions: [LuaRegistration] = [
        ("decode", decode),
        ("load_file", loadFile),
    ]

    /// Aliases can make a small document expand into a huge value ("billion laughs").
    static let maximumNodes = 1_000_000
    static let maximumDepth = 200

    /// The YAML 1.2 core schema (libyaml/Yams default to YAML 1.1 rules, where `off` is false).
    static let coreResolver: Resolver = {
        // swiftlint:disable force_try
        Resolver.basic
            .appending(try! Resolver.Rule(.null, "^(?:~|null|Null|NULL|)$"))
            .appending(try! Resolver.Rule(.bool, "^(?:true|True|TRUE|false|False|FALSE)$"))
            .appending(try! Resolver.Rule(.int, "^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"))
            .appending(try! Resolver.Rule(.float, "^(?:[-+]?(?:\\.[0-9]+|[0-9]+(?:\\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$"))
            .appending(try! Resolver.Rule(.merge, "^(?:<<)$"))
        // swiftlint:enable force_try
    }()

    /// A document that parsed but cannot become a Lua value (too big, a mapping as a key).
    struct ConversionError: Error {
        var message: String
        var mark: Mark?
        var text: String { mark.map { "\(message) at line \($0.line) column \($0.column)" } ?? message }
    }

    /// One line for a Yams error: "<problem> at line L column C".
    static func describe(_ error: Error) -> String {
        func at(_ mark: Mark) -> String { "at line \(mark.line) column \(mark.column)" }
        guard let error = error as? YamlError else {
            if let error = error as? ConversionError { return error.text }
            return String(describing: error)
        }
        switch error {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            var text = "\(problem) \(at(mark))"
            if let context { text += " (\(context.text) \(at(context.mark)))" }
            return text
        case .reader(let problem, let offset, _, _):
            return offset.map { "\(problem) at character \($0 + 1)" } ?? problem
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            return "duplicate key \(keys) in a mapping \(at(context.mark))"
        case .dataCouldNotBeDecoded:
            return "the text is not valid UTF-8"
        default:
            return String(describing: error).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Parses `text` (one document) and pushes its value.
    static func push(_ lua: Lua, yaml text: String) throws {
        guard let root = try Yams.compose(yaml: text, coreResolver, .default, .utf8) else {
            lua_pushlightuserdata(lua.L, nil) // an empty document is null
            return
        }
        var converter = Converter(lua: lua)
        try converter.push(root, depth: 0)
    }

    struct Converter {
        let lua: Lua
        var nodes = 0

        mutating func push(_ node: Node, depth: Int) throws {
            nodes += 1
            guard nodes <= YAMLModule.maximumNodes else {
                throw ConversionError(message: "the document expands to more than \(YAMLModule.maximumNodes) values (aliases)", mark: node.mark)
            }
            guard depth < YAMLModule.maximumDepth, lua_checkstack(lua.L, 6) != 0 else {
                throw ConversionError(message: "values nested deeper than \(YAMLModule.maximumDepth) levels", mark: node.mark)
            }
            switch node {
            case .scalar(let scalar):
                try pushScalar(scalar, tag: node.tag.description)
            case .sequence(let sequence):
                lua.newTable(arrayCount: Int32(clamping: sequence.count))
                for (i, item) in sequence.enumerated() {
                    try push(item, depth: depth + 1)
                    lua.setRawIndex(-2, Int64(i + 1))
                }
                mq_getmetatable_named(lua.L, JSONModule.arrayMarker)
                lua_setmetatable(lua.L, -2)
            case .mapping(let mapping):
                lua.newTable(recordCount: Int32(clamping: mapping.count))
                let table = lua.top
                var merges: [Node] = []
                var order: [String] = []
                for (key, value) in mapping {
                    guard case .scalar(let keyScalar) = key else {
                        throw ConversionError(message: "mapping keys must be scalars, not a mapping or a list", mark: key.mark)
                    }
                    if key.tag.description == Tag.Name.merge.rawValue {
                        merges.append(value)
                        continue
                    }
                    try push(value, depth: depth + 1)
                    lua.setRawField(table, keyScalar.string)
                    order.append(keyScalar.string)
                }
                // `<<: *base` or `<<: [*a, *b]`: keys not given here come from the merged
                // mappings, earlier ones first.
                for merge in merges {
                    let sources: [Node]
                    switch merge {
                    case .mapping: sources = [merge]
                    case .sequence(let list): sources = Array(list)
                    default: throw ConversionError(message: "a merge key (<<) needs a mapping or a list of mappings", mark: merge.mark)
                    }
                    for source in sources {
                        guard case .mapping(let inherited) = source else {
                            throw ConversionError(message: "a merge key (<<) needs a mapping or a list of mappings", mark: source.mark)
                        }
                        for (key, value) in inherited {
                            guard case .scalar(let keyScalar) = key, key.tag.description != Tag.Name.merge.rawValue else { continue }
                            if lua.rawField(table, keyScalar.string) != LUA_TNIL { lua.pop(); continue }
                            lua.pop()
                            try push(value, depth: depth + 1)
                            lua.setRawField(table, keyScalar.string)
                            order.append(keyScalar.string)
                        }
                    }
                }
                // The keys in document order (QEMU options are order-sensitive: the first key
                // of an `arguments` item is the option), in the mapping's own metatable:
                // getmetatable(t).__keys. A copy of the table drops it.
                lua.newTable(recordCount: 1)
                lua.newTable(arrayCount: Int32(clamping: order.count))
                for (i, key) in order.enumerated() {
                    lua.push(key)
                    lua.setRawIndex(-2, Int64(i + 1))
                }
                lua.setRawField(-2, "__keys")
                lua_setmetatable(lua.L, table)
            case .alias:
                // compose() resolves aliases to the anchored node; an unresolved one is an error.
                throw ConversionError(message: "unresolved alias", mark: node.mark)
            }
        }

        func pushScalar(_ scalar: Node.Scalar, tag: String) throws {
            let text = scalar.string
            switch tag {
            case Tag.Name.null.rawValue:
                lua_pushlightuserdata(lua.L, nil)
            case Tag.Name.bool.rawValue:
                switch text.lowercased() {
                case "true": lua.push(true)
                case "false": lua.push(false)
                default: throw ConversionError(message: "'\(text)' is not a boolean (true or false)", mark: scalar.mark)
                }
            case Tag.Name.int.rawValue:
                if let value = YAMLModule.integer(text) {
                    lua.push(value)
                } else if let value = Double(text.replacingOccurrences(of: "_", with: "")), value.isFinite {
                    lua.push(value) // beyond 64 bits: a float, like JSON
                } else {
                    throw ConversionError(message: "'\(text)' is not an integer", mark: scalar.mark)
                }
            case Tag.Name.float.rawValue:
                guard let value = YAMLModule.float(text) else {
                    throw ConversionError(message: "'\(text)' is not a number", mark: scalar.mark)
                }
                lua.push(value)
            default:
                lua.push(text) // !!str, quoted, block scalars, unknown tags
            }
        }
    }

    /// `12`, `-3`, `0x1f`, `0o17` (YAML 1.2 core).
    static func integer(_ text: String) -> Int64? {
        if text.hasPrefix("0x") { return Int64(text.dropFirst(2), radix: 16) }
        if text.hasPrefix("0o") { return Int64(text.dropFirst(2), radix: 8) }
        return Int64(text.hasPrefix("+") ? String(text.dropFirst()) : text)
    }

    /// `1.5`, `-2e3`, `.inf`, `-.inf`, `.nan`.
    static func float(_ text: String) -> Double? {
        let lower = text.lowercased()
        switch lower {
        case ".inf", "+.inf": return .infinity
        case "-.inf": return -.infinity
        case ".nan": return .nan
        default:
            var t = lower.hasPrefix("+") ? String(lower.dropFirst()) : lower
            if t.hasPrefix(".") { t = "0" + t } else if t.hasPrefix("-.") { t = "-0" + t.dropFirst() }
            return Double(t)
        }
    }

    // MARK: Functions

    /// Pushes the value of YAML `text` (1 result), or `nil, "<prefix>: problem", "EYAML"` (3).
    private static func pushDecoded(_ lua: Lua, _ text: String, failurePrefix: String) -> Int32 {
        let base = lua.top
        do {
            try push(lua, yaml: text)
            return 1
        } catch {
            lua.top = base
            return lua.fail("\(failurePrefix): \(describe(error))", code: "EYAML")
        }
    }

    /// `maqet.yaml.decode(text)`: the value, or `nil, "maqet.yaml.decode: … at line L column C", "EYAML"`.
    private static let decode: LuaFunction = { L in
        Lua.call(L) { lua in
            guard lua.type(at: 1) == LUA_TSTRING else {
                throw LuaUsageError("maqet.yaml.decode: text must be a string, got \(lua.typeName(at: 1))")
            }
            var length = 0
            let p = mq_tostring(lua.L, 1, &length)!
            guard let text = String(validating: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self) else {
                return lua.fail("maqet.yaml.decode: the text is not valid UTF-8", code: "EYAML")
            }
            return pushDecoded(lua, text, failurePrefix: "maqet.yaml.decode")
        }
    }

    /// `maqet.yaml.load_file(path)`: the file's value, or `nil, "maqet.yaml.load_file PATH: …", code`
    /// (`"ENOENT"`, `"EACCES"`, `"EISDIR"`, … when it cannot be read, `"EYAML"` when it is not YAML).
    private static let loadFile: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lua.checkPath(1, "maqet.yaml.load_file", "path")
            let prefix = "maqet.yaml.load_file \(path)"
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                let code = errno
                return lua.fail("\(prefix): \(String(cString: strerror(code)))", code: errnoName(code))
            }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    let code = errno
                    return lua.fail("\(prefix): \(String(cString: strerror(code)))", code: errnoName(code))
                }
                if n == 0 { break }
                bytes.append(contentsOf: chunk[0..<n])
                guard bytes.count <= 16 << 20 else {
                    return lua.fail("\(prefix): larger than 16 MiB, not a VM definition", code: "EFBIG")
                }
            }
            guard let text = String(validating: bytes, as: UTF8.self) else {
                return lua.fail("\(prefix): the file is not valid UTF-8", code: "EYAML")
            }
            return pushDecoded(lua, text, failurePrefix: prefix)
        }
    }
}
