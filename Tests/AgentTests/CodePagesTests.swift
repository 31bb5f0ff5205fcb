@testable import Agent
import Foundation
import Testing

/// Letting go of code pages: the process keeps running (what runs is mapped again), and its
/// resident file pages go down.
@Suite struct CodePagesTests {
    static func residentFileKiB() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("RssFile:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    @Test func releasingCodePagesLowersResidentFilePagesAndCodeStillRuns() {
        // Touch a good deal of code first (Foundation formatting, JSON).
        let data = try? JSONSerialization.data(withJSONObject: ["a": [1, 2, 3], "b": "text"])
        #expect(data != nil)
        let before = Self.residentFileKiB()
        let advised = CodePages.release()
        let after = Self.residentFileKiB()
        #expect(advised > 1 << 20, "executable mappings advised: \(advised) bytes")
        #expect(after < before, "RssFile \(before) KiB → \(after) KiB")
        // What runs next is mapped again on its first use.
        let again = try? JSONSerialization.jsonObject(with: data ?? Data()) as? [String: Any]
        #expect(again?["b"] as? String == "text")
        #expect((1...1000).reduce(0, +) == 500_500)
    }
}
