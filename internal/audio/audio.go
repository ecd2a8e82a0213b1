// Package audio is telephone audio for the modem, DTMF and line packages:
// mono samples as float64 in [-1, 1] at Rate samples per second, and WAV
// files (RIFF WAVE with PCM or IEEE float data) to read and write them.
//
// It imports only the standard library.
package audio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Rate is the sample rate of the telephone line: 8 kHz.
const Rate = 8000

// MaxSamples bounds what ReadWAV returns: one hour at 8 kHz. A file
// claiming more is refused before anything is allocated for it.
const MaxSamples = Rate * 3600

// ErrFormat is wrapped by every error ReadWAV returns for a file that is
// not a WAV file it can read.
var ErrFormat = errors.New("audio: not a readable WAV file")

// WAV format tags (Microsoft RIFF, WAVEFORMAT and WAVEFORMATEXTENSIBLE).
const (
	formatPCM        = 1
	formatFloat      = 3
	formatExtensible = 0xFFFE
)

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// ReadWAV reads a WAV file: integer PCM of 8, 16, 24 or 32 bits, or 32-
// or 64-bit IEEE float, with any number of channels (the first is kept)
// at any rate (returned; resampling is the caller's choice). A data chunk
// whose size is 0 or 0xFFFFFFFF (as streaming writers leave it) runs to
// the end of the input. Errors wrap ErrFormat, or are the reader's.
func ReadWAV(r io.Reader) (samples []float64, rate int, err error) {
	br := bufio.NewReader(r)
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, 0, formatErr("short RIFF header")
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil, 0, formatErr("no RIFF WAVE header")
	}
	var (
		haveFmt  bool
		tag      uint16
		channels int
		bits     int
	)
	for {
		var ch [8]byte
		if _, err := io.ReadFull(br, ch[:]); err != nil {
			return nil, 0, formatErr("no data chunk")
		}
		id, size := string(ch[0:4]), binary.LittleEndian.Uint32(ch[4:8])
		switch id {
		case "fmt ":
			if size < 16 || size > 1024 {
				return nil, 0, formatErr("fmt chunk of %d bytes", size)
			}
			f := make([]byte, size+size%2)
			if _, err := io.ReadFull(br, f); err != nil {
				return nil, 0, formatErr("short fmt chunk")
			}
			tag = binary.LittleEndian.Uint16(f[0:2])
			channels = int(binary.LittleEndian.Uint16(f[2:4]))
			rate = int(binary.LittleEndian.Uint32(f[4:8]))
			bits = int(binary.LittleEndian.Uint16(f[14:16]))
			if tag == formatExtensible {
				if size < 40 {
					return nil, 0, formatErr("extensible fmt chunk of %d bytes", size)
				}
				tag = binary.LittleEndian.Uint16(f[24:26]) // sub-format GUID's first two bytes
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, 0, formatErr("data before fmt")
			}
			s, err := readData(br, size, tag, channels, bits, rate)
			return s, rate, err
		default:
			if _, err := io.CopyN(io.Discard, br, int64(size)+int64(size%2)); err != nil {
				return nil, 0, formatErr("short %q chunk", id)
			}
		}
	}
}

func readData(r io.Reader, size uint32, tag uint16, channels, bits, rate int) ([]float64, error) {
	if channels < 1 || channels > 16 {
		return nil, formatErr("%d channels", channels)
	}
	if rate < 1000 || rate > 384000 {
		return nil, formatErr("sample rate %d", rate)
	}
	var decode func([]byte) float64
	switch {
	case tag == formatPCM && bits == 8:
		decode = func(b []byte) float64 { return (float64(b[0]) - 128) / 128 }
	case tag == formatPCM && bits == 16:
		decode = func(b []byte) float64 { return float64(int16(binary.LittleEndian.Uint16(b))) / 32768 }
	case tag == formatPCM && bits == 24:
		decode = func(b []byte) float64 {
			v := int32(uint32(b[0])<<8|uint32(b[1])<<16|uint32(b[2])<<24) >> 8
			return float64(v) / (1 << 23)
		}
	case tag == formatPCM && bits == 32:
		decode = func(b []byte) float64 { return float64(int32(binary.LittleEndian.Uint32(b))) / (1 << 31) }
	case tag == formatFloat && bits == 32:
		decode = func(b []byte) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))) }
	case tag == formatFloat && bits == 64:
		decode = func(b []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b)) }
	default:
		return nil, formatErr("format %d with %d bits per sample", tag, bits)
	}
	frame := channels * bits / 8
	toEOF := size == 0 || size == 0xFFFFFFFF
	if !toEOF {
		if n := int64(size) / int64(frame); n > MaxSamples {
			return nil, formatErr("%d samples, more than %d", n, MaxSamples)
		}
		r = io.LimitReader(r, int64(size))
	}
	var out []float64
	if !toEOF {
		out = make([]float64, 0, int(size)/frame)
	}
	buf := make([]byte, frame*1024)
	for {
		n, err := io.ReadFull(r, buf)
		if len(out)+n/frame > MaxSamples {
			return nil, formatErr("more than %d samples", MaxSamples)
		}
		switch {
		case tag == formatPCM && bits == 16:
			// The common case, without a call per sample: 16-bit
			// samples are always in range.
			for i := 0; i+frame <= n; i += frame {
				out = append(out, float64(int16(binary.LittleEndian.Uint16(buf[i:])))/32768)
			}
		default:
			for i := 0; i+frame <= n; i += frame {
				v := decode(buf[i:])
				if math.IsNaN(v) || math.IsInf(v, 0) {
					v = 0
				}
				out = append(out, clamp(v))
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func clamp(v float64) float64 {
	return max(-1, min(1, v))
}

// WriteWAV writes samples as a 16-bit PCM mono WAV file at rate. Samples
// outside [-1, 1] are clipped.
func WriteWAV(w io.Writer, rate int, samples []float64) error {
	if rate <= 0 {
		return fmt.Errorf("audio: sample rate %d", rate)
	}
	if len(samples) > (math.MaxUint32-44)/2 {
		return fmt.Errorf("audio: %d samples do not fit a WAV file", len(samples))
	}
	data := uint32(2 * len(samples))
	h := make([]byte, 0, 44)
	h = append(h, "RIFF"...)
	h = binary.LittleEndian.AppendUint32(h, 36+data)
	h = append(h, "WAVEfmt "...)
	h = binary.LittleEndian.AppendUint32(h, 16)
	h = binary.LittleEndian.AppendUint16(h, formatPCM)
	h = binary.LittleEndian.AppendUint16(h, 1)
	h = binary.LittleEndian.AppendUint32(h, uint32(rate))
	h = binary.LittleEndian.AppendUint32(h, uint32(rate)*2)
	h = binary.LittleEndian.AppendUint16(h, 2)
	h = binary.LittleEndian.AppendUint16(h, 16)
	h = append(h, "data"...)
	h = binary.LittleEndian.AppendUint32(h, data)
	bw := bufio.NewWriter(w)
	if _, err := bw.Write(h); err != nil {
		return err
	}
	var b [2]byte
	for _, s := range samples {
		binary.LittleEndian.PutUint16(b[:], uint16(ToInt16(s)))
		if _, err := bw.Write(b[:]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ToInt16 converts a sample to 16-bit PCM, clipping and rounding.
func ToInt16(s float64) int16 {
	if math.IsNaN(s) {
		return 0
	}
	v := math.Round(clamp(s) * 32767)
	return int16(v)
}

// FromInt16 converts a 16-bit PCM sample to [-1, 1].
func FromInt16(v int16) float64 { return float64(v) / 32768 }
