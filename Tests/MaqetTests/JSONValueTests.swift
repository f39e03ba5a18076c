@testable import MaqetCore
import XCTest

/// The JSON codec in MaqetCore, as Swift callers (the CLI) use it.
final class JSONValueTests: XCTestCase {
    func testSerialiseAndParseRoundTrip() throws {
        let value = JSONValue.object([
            ("name", .string("web \"1\"\n😀")),
            ("cpus", .integer(2)),
            ("ratio", .double(0.1)),
            ("disks", .array([.string("a.qcow2"), .null, .bool(true)])),
            ("empty", .object([])),
        ])
        let text = try value.serialized()
        XCTAssertEqual(text, #"{"name":"web \"1\"\n😀","cpus":2,"ratio":0.1,"disks":["a.qcow2",null,true],"empty":{}}"#)
        XCTAssertEqual(try JSONValue.parse(text), value)
        XCTAssertEqual(try value.serialized(indent: 2), """
            {
              "name": "web \\"1\\"\\n😀",
              "cpus": 2,
              "ratio": 0.1,
              "disks": [
                "a.qcow2",
                null,
                true
              ],
              "empty": {}
            }
            """)
    }

    func testNumbers() throws {
        XCTAssertEqual(try JSONValue.parse("9223372036854775807"), .integer(.max))
        XCTAssertEqual(try JSONValue.parse("9223372036854775808"), .double(9223372036854775808.0))
        XCTAssertEqual(try JSONValue.parse("-0"), .integer(0))
        XCTAssertEqual(try JSONValue.parse("1E2"), .double(100))
        XCTAssertEqual(try JSONValue.double(100).serialized(), "100.0")
        XCTAssertThrowsError(try JSONValue.double(.nan).serialized())
        for d in [0.1, 1.0 / 3.0, 5e-324, 1.7976931348623157e308, -2.5e-8] {
            XCTAssertEqual(try JSONValue.parse(JSONValue.double(d).serialized()), .double(d))
        }
    }

    func testSyntaxErrorsCarryPosition() {
        XCTAssertThrowsError(try JSONValue.parse("{\n  \"a\": tru\n}")) { error in
            XCTAssertEqual("\(error)", "unexpected end of line at line 2 column 11")
        }
        XCTAssertThrowsError(try JSONValue.parse("[1,\u{1}]")) { error in
            XCTAssertEqual("\(error)", "unexpected control character U+0001 at line 1 column 4")
        }
        XCTAssertThrowsError(try JSONValue.parse("[1, 2")) { error in
            XCTAssertEqual("\(error)", "unexpected end of input at line 1 column 6")
        }
        XCTAssertThrowsError(try JSONValue.parse("\"\\udc00\"")) { error in
            XCTAssertEqual("\(error)", "unpaired surrogate \\u escape at line 1 column 2")
        }
        XCTAssertThrowsError(try JSONValue.parse(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)))
    }
}
