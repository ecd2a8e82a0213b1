// Package line simulates the telephone network for issue 7: a switch
// (Switch) that parties reach over loopback TCP, registering numbers
// (Listen, Accept: the IVR server) or dialling them (Dial: the in-line
// device), and that carries each call's audio both ways as 8 kHz 16-bit
// PCM on its own clock, impaired per direction by package impair (band
// limit, noise, attenuation, sample-clock drift, bursts). A Call reads and
// writes package audio's float samples, paced by the line, with the
// sample counts a modem needs to reason about time.
//
// The wire protocol, the impairment model and the CLI are described in
// docs/telephone-line.md. The package imports only audio, impair and the
// standard library.
package line
