import Foundation

/// How many trials a fault test runs. The suite (and CI) runs the small count; `Tools/campaign`
/// sets MAQET_CAMPAIGN=1 for the long count, and MAQET_CAMPAIGN_TRIALS=N overrides both.
/// Fault test classes are named `…FaultTests`, so the campaign can pick them all.
enum Campaign {
    static var isLong: Bool { ProcessInfo.processInfo.environment["MAQET_CAMPAIGN"] == "1" }

    static func trials(ci: Int, campaign: Int) -> Int {
        if let text = ProcessInfo.processInfo.environment["MAQET_CAMPAIGN_TRIALS"], let n = Int(text), n > 0 {
            return n
        }
        return isLong ? campaign : ci
    }
}
