// Package plot draws the benchmark report's PNG charts (line charts of series over a shared
// x axis, and histograms) with axes, ticks and a legend, using only the standard image
// packages and a bitmap font.
package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one named line (or set of bars).
type Series struct {
	Name string
	X, Y []float64
}

// Chart is a chart to draw.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	Bars                  bool // draw each series as bars at its X (a histogram)
	W, H                  int
}

var palette = []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {255, 127, 14, 255}, {148, 103, 189, 255}}

const (
	left, right, top, bottom = 70, 20, 40, 50
)

// Save writes the chart as a PNG.
func (c Chart) Save(path string) error {
	if c.W == 0 {
		c.W, c.H = 800, 420
	}
	img := image.NewRGBA(image.Rect(0, 0, c.W, c.H))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	minX, maxX, maxY := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range c.Series {
		for i := range s.X {
			minX, maxX, maxY = math.Min(minX, s.X[i]), math.Max(maxX, s.X[i]), math.Max(maxY, s.Y[i])
		}
	}
	if minX > 0 && !c.Bars {
		minX = 0
	}
	if maxX <= minX {
		maxX = minX + 1
	}
	if maxY <= 0 {
		maxY = 1
	}
	maxY = niceCeil(maxY)
	pw, ph := c.W-left-right, c.H-top-bottom
	px := func(x float64) int { return left + int(float64(pw)*(x-minX)/(maxX-minX)) }
	py := func(y float64) int { return top + ph - int(float64(ph)*y/maxY) }
	gray := color.RGBA{200, 200, 200, 255}
	black := color.RGBA{0, 0, 0, 255}
	for i := 0; i <= 5; i++ { // grid and y ticks
		y := maxY * float64(i) / 5
		hline(img, left, left+pw, py(y), gray)
		text(img, 4, py(y)+4, fmt.Sprintf("%8s", short(y)), black)
	}
	for i := 0; i <= 5; i++ { // x ticks
		x := minX + (maxX-minX)*float64(i)/5
		vline(img, px(x), top+ph, top+ph+4, black)
		text(img, px(x)-16, top+ph+16, short(x), black)
	}
	hline(img, left, left+pw, top+ph, black)
	vline(img, left, top, top+ph, black)
	text(img, left, 20, c.Title, black)
	text(img, left+pw/2-len(c.XLabel)*3, c.H-12, c.XLabel, black)
	text(img, 4, 34, c.YLabel, black)
	for si, s := range c.Series {
		col := palette[si%len(palette)]
		if c.Bars {
			bw := max(2, pw/max(1, len(s.X)*len(c.Series))-2)
			for i := range s.X {
				x0 := px(s.X[i]) + si*bw
				fill(img, x0, py(s.Y[i]), x0+bw, top+ph, col)
			}
		} else {
			for i := 1; i < len(s.X); i++ {
				line(img, px(s.X[i-1]), py(s.Y[i-1]), px(s.X[i]), py(s.Y[i]), col)
			}
		}
		fill(img, left+20, top+8+si*16, left+32, top+18+si*16, col)
		text(img, left+40, top+18+si*16, s.Name, black)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	err := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
