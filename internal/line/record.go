package line

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"cardlink/internal/audio"
)

// wavWriter streams 16-bit mono PCM at audio.Rate to a WAV file whose
// sizes it fixes when closed (until then they say "to the end of the
// file", which audio.ReadWAV accepts, so a crash leaves a readable file).
type wavWriter struct {
	f   *os.File
	w   *bufio.Writer
	n   int64 // samples written
	err error
}

const maxWAVSamples = (1<<32 - 1 - 44) / 2

func createWAV(path string) (*wavWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating recording: %w", err)
	}
	w := &wavWriter{f: f, w: bufio.NewWriter(f)}
	h := make([]byte, 0, 44)
	h = append(h, "RIFF"...)
	h = binary.LittleEndian.AppendUint32(h, 0xFFFFFFFF)
	h = append(h, "WAVEfmt "...)
	h = binary.LittleEndian.AppendUint32(h, 16)
	h = binary.LittleEndian.AppendUint16(h, 1) // PCM
	h = binary.LittleEndian.AppendUint16(h, 1) // mono
	h = binary.LittleEndian.AppendUint32(h, audio.Rate)
	h = binary.LittleEndian.AppendUint32(h, audio.Rate*2)
	h = binary.LittleEndian.AppendUint16(h, 2)
	h = binary.LittleEndian.AppendUint16(h, 16)
	h = append(h, "data"...)
	h = binary.LittleEndian.AppendUint32(h, 0xFFFFFFFF)
	w.w.Write(h)
	return w, nil
}

// write appends samples; past the WAV size limit (about 37 h) it stops.
func (w *wavWriter) write(s []float64) {
	if w.err != nil {
		return
	}
	if w.n+int64(len(s)) > maxWAVSamples {
		w.err = errors.New("recording too long for a WAV file")
		return
	}
	var b [2]byte
	for _, v := range s {
		binary.LittleEndian.PutUint16(b[:], uint16(audio.ToInt16(v)))
		w.w.Write(b[:])
	}
	w.n += int64(len(s))
}

// Close writes the sizes and closes the file.
func (w *wavWriter) Close() error {
	err := w.w.Flush()
	data := uint32(2 * w.n)
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], 36+data)
	if _, e := w.f.WriteAt(b[:], 4); err == nil {
		err = e
	}
	binary.LittleEndian.PutUint32(b[:], data)
	if _, e := w.f.WriteAt(b[:], 40); err == nil {
		err = e
	}
	if e := w.f.Close(); err == nil {
		err = e
	}
	return errors.Join(w.err, err)
}
