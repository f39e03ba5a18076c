// libFuzzer entry point for the JSON decoder (Sources/MaqetCore/JSON.swift), built by
// Tools/fuzz/run outside the package (it is no target: `swift build` never compiles it).
// Property: parse either throws or returns a value that re-encodes and parses back to itself
// (or that the encoder refuses: infinity); anything else, a crash or a sanitizer report, is a
// finding libFuzzer saves as crash-<hash>.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSONDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard let value = try? JSONValue.parse(bytes: input) else { return 0 }
    guard let text = try? value.serialized() else { return 0 }
    guard let again = try? JSONValue.parse(text), again == value else {
        fatalError("the decoded value re-encodes as \(text.prefix(200)), which does not parse back to it")
    }
    return 0
}
