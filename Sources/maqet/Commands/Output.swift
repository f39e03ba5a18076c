import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime
import Yams

// The one owner of maqet's output formats: every command prints its structured result through
// `printStructured` (JSON or YAML of the same value), so a format is defined here once.

/// Output formats of listing commands.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, yaml, plain

    /// The machine format, when this is one.
    var structured: ReportFormat? {
        switch self {
        case .json: return .json
        case .yaml: return .yaml
        case .table, .plain: return nil
        }
    }
}

/// Human or machine-readable (JSON, YAML) output.
enum ReportFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json, yaml
}

extension JSONValue {
    /// Prints the value as `format` asks and returns true, when that is a machine format (json,
    /// yaml); returns false for text, so the caller prints its human form:
    /// `if result.printStructured(format) { return }`.
    ///
    /// A VM's config always comes out as an object, never as an escaped JSON string: an object
    /// with a `config_data` string of JSON text (a vm_instances row) and no `config` gets
    /// `config`, that text parsed (as `maqet ls --format json` does).
    @discardableResult
    func printStructured(_ format: ReportFormat) -> Bool {
        let value = withConfigObjects
        switch format {
        case .text: return false
        case .json:
            var out = OutputBuffer()
            out.line((try? value.serialized(indent: 2)) ?? "null")
            out.flush()
        case .yaml:
            var out = OutputBuffer()
            out.append(value.yamlText)
            out.flush()
        }
        return true
    }

    /// Adds `config` (parsed) beside every `config_data` string holding a JSON object.
    var withConfigObjects: JSONValue {
        switch self {
        case .array(let items): return .array(items.map(\.withConfigObjects))
        case .object(var members):
            members = members.map { ($0.key, $0.value.withConfigObjects) }
            if !members.contains(where: { $0.key == "config" }),
               let index = members.firstIndex(where: { $0.key == "config_data" }),
               case .string(let text) = members[index].value,
               let parsed = try? JSONValue.parse(text), case .object = parsed {
                members.insert((key: "config", value: parsed), at: index + 1)
            }
            return .object(members)
        default: return self
        }
    }

    /// The value as a YAML document in block style (keys in their order; strings that a YAML
    /// reader would take for something else, such as `off`, `123` or `null`, are quoted).
    var yamlText: String {
        let text = (try? Yams.serialize(node: yamlNode, allowUnicode: true)) ?? "null\n"
        return text.hasSuffix("\n") ? text : text + "\n"
    }

    private var yamlNode: Node {
        switch self {
        case .null: return .scalar(.init("null"))
        case .bool(let b): return .scalar(.init(b ? "true" : "false"))
        case .integer(let i): return .scalar(.init(String(i)))
        case .double(let d):
            return .scalar(.init(d.isFinite ? ((try? JSONValue.formatDouble(d)) ?? String(d)) : (d.isNaN ? ".nan" : (d > 0 ? ".inf" : "-.inf"))))
        case .string(let s): return .scalar(s.represented())
        case .array(let items): return .sequence(.init(items.map(\.yamlNode)))
        case .object(let members):
            return .mapping(.init(members.map { (Node.scalar($0.key.represented()), $0.value.yamlNode) }))
        }
    }
}

/// Collects a command's stdout and writes it with one `write(2)` loop at the end.
struct OutputBuffer {
    var bytes: [UInt8] = []

    init(capacity: Int = 4096) { bytes.reserveCapacity(capacity) }

    mutating func append(_ text: String) { bytes.append(contentsOf: text.utf8) }
    mutating func append<C: Collection>(bytes more: C) where C.Element == UInt8 { bytes.append(contentsOf: more) }
    mutating func line(_ text: String = "") { append(text); bytes.append(0x0A) }

    /// Appends `text` as a JSON string literal.
    mutating func jsonString(_ text: String) { jsonString(bytes: Array(text.utf8)) }

    mutating func jsonString<C: Collection>(bytes text: C) where C.Element == UInt8 {
        bytes.append(0x22)
        for byte in text {
            switch byte {
            case 0x22: bytes.append(0x5C); bytes.append(0x22)
            case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
            case 0x0A: bytes.append(0x5C); bytes.append(0x6E)
            case 0x0D: bytes.append(0x5C); bytes.append(0x72)
            case 0x09: bytes.append(0x5C); bytes.append(0x74)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0xF)])
            default: bytes.append(byte)
            }
        }
        bytes.append(0x22)
    }

    /// Writes everything to stdout.
    func flush() {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(1, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return // stdout closed (e.g. piped into head): nothing more to do
                }
                offset += n
            }
        }
    }
}

/// A tiny JSON value for reports (not for the hot `ls` path).
indirect enum JSON {
    case null, bool(Bool), int(Int64), double(Double), string(String), array([JSON]), object([(String, JSON)]), raw(String)

    func write(to out: inout OutputBuffer, indent: Int = 0) {
        let pad = String(repeating: "  ", count: indent + 1)
        let closePad = String(repeating: "  ", count: indent)
        switch self {
        case .null: out.append("null")
        case .bool(let b): out.append(b ? "true" : "false")
        case .int(let i): out.append(String(i))
        case .double(let d): out.append(d.isFinite ? String(d) : "null")
        case .string(let s): out.jsonString(s)
        case .raw(let s): out.append(s)
        case .array(let items):
            if items.isEmpty { out.append("[]"); return }
            out.append("[\n")
            for (i, item) in items.enumerated() {
                out.append(pad)
                item.write(to: &out, indent: indent + 1)
                out.append(i + 1 < items.count ? ",\n" : "\n")
            }
            out.append(closePad + "]")
        case .object(let fields):
            if fields.isEmpty { out.append("{}"); return }
            out.append("{\n")
            for (i, (key, value)) in fields.enumerated() {
                out.append(pad)
                out.jsonString(key)
                out.append(": ")
                value.write(to: &out, indent: indent + 1)
                out.append(i + 1 < fields.count ? ",\n" : "\n")
            }
            out.append(closePad + "}")
        }
    }

    static func optional(_ s: String?) -> JSON { s.map(JSON.string) ?? .null }
}

/// Prints a report on stdout as a JSON document, or as YAML (`as: .yaml`).
func printJSON(as format: ReportFormat = .json, _ value: JSON) {
    var out = OutputBuffer()
    value.write(to: &out)
    out.line()
    if format == .yaml, let parsed = try? JSONValue.parse(String(decoding: out.bytes, as: UTF8.self)) {
        parsed.printStructured(.yaml)
        return
    }
    out.flush()
}

/// Pads `text` with spaces to `width` characters.
func padded(_ text: String, _ width: Int) -> String {
    let count = text.count
    return count >= width ? text : text + String(repeating: " ", count: width - count)
}

/// Lines of a simple aligned table: header, a line of dashes, rows; columns three spaces apart.
func tableLines(header: [String], rows: [[String]]) -> [String] {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func render(_ cells: [String]) -> String {
        cells.enumerated().map { i, cell in i == cells.count - 1 ? cell : padded(cell, widths[i]) }.joined(separator: "   ")
    }
    return [render(header), render(widths.map { String(repeating: "-", count: $0) })] + rows.map(render)
}

extension GlobalOptions {
    /// Where the state lives, from the options and the environment.
    var stateConfiguration: StateConfiguration {
        StateConfiguration(dataDirOption: maqetDataDir, migrationsDirOption: migrationsDir)
    }

    /// Where workflow scripts come from, from the options and the environment.
    var scriptLocator: ScriptLocator { ScriptLocator(scriptsDirOption: scriptsDir) }

    /// A Lua runtime for this command, with the user's script overrides.
    func makeRuntime(memoryLimit: Int = 0) -> Runtime {
        let runtime = Runtime(verbosity: verbosity, scripts: scriptLocator, memoryLimit: memoryLimit)
        runtime.tracebacks = debug || Settings.debug
        return runtime
    }

    /// Writes the one-line migration notice to stderr (suppressed by --quiet).
    func notice(_ line: String) {
        if line.hasPrefix("warning: ") { MaqetLog.appendToFile("warning", String(line.dropFirst(9))) } else { MaqetLog.appendToFile("notice", line) }
        guard verbosity >= 0 else { return }
        FileHandle.standardError.write(Data(("maqet: " + line + "\n").utf8))
    }
}
